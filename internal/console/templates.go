package console

import (
	"fmt"
	"html/template"
)

// pageNames are the page templates: each is templates/<name>.html, executed inside layout.html.
var pageNames = []string{"login", "error", "sagas", "saga", "definitions", "dlq", "deadletter"}

// parsePages parses every page with the layout; a template error is a build error of Sagaflow, and
// the tests parse them all.
func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parse template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}
