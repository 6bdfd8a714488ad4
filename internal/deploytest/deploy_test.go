package deploytest

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	order "github.com/sagaflow/sagaflow/examples/order"
)

// root is the repository root, relative to this package.
const root = "../.."

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	require.NoError(t, err)
	return b
}

// instrumentRE finds the OpenTelemetry instruments the code creates: kind, name and unit.
var instrumentRE = regexp.MustCompile(`(Int64Counter|Float64Histogram|Int64ObservableGauge|Float64ObservableGauge)\("(sagaflow\.[a-z_.]+)",\s*metric\.WithUnit\("([^"]+)"\)`)

// knownMetrics returns the Prometheus names of every metric the code defines, translated as the
// OpenTelemetry Prometheus exporter does: dots become underscores, unit "s" adds _seconds,
// counters add _total, histograms expose _bucket, _sum and _count.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, f := range []string{"engine/telemetry.go", "outbox/telemetry.go", "internal/bus/deadletter.go", "internal/bus/heal.go", "internal/bus/subscriber.go"} {
		for _, m := range instrumentRE.FindAllStringSubmatch(string(read(t, f)), -1) {
			kind, name, unit := m[1], strings.ReplaceAll(m[2], ".", "_"), m[3]
			if unit == "s" {
				name += "_seconds"
			}
			switch kind {
			case "Int64Counter":
				known[name+"_total"] = true
			case "Float64Histogram":
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					known[name+s] = true
				}
			default:
				known[name] = true
			}
		}
	}
	// The exact names docs/observability.md and the alerts promise; the e2e metrics test scrapes
	// most of them from a real run.
	for _, name := range []string{"sagaflow_sagas_started_total", "sagaflow_sagas_finished_total", "sagaflow_sagas_in_flight",
		"sagaflow_step_duration_seconds_bucket", "sagaflow_step_retries_total", "sagaflow_step_timeouts_total", "sagaflow_late_effects_total",
		"sagaflow_outbox_backlog", "sagaflow_outbox_oldest_unpublished_age_seconds", "sagaflow_outbox_quarantined",
		"sagaflow_relay_published_total", "sagaflow_relay_quarantined_total", "sagaflow_dead_lettered_total",
		"sagaflow_bus_recreated_total", "sagaflow_bus_abandoned_total"} {
		require.True(t, known[name], "the code defines %s (found %v)", name, known)
	}
	return known
}

// promQL is Prometheus's own PromQL parser.
var promQL = parser.NewParser(parser.Options{})

// requireKnownMetrics parses expr (Grafana variables replaced) and checks every metric it selects.
func requireKnownMetrics(t *testing.T, known map[string]bool, where, expr string) {
	t.Helper()
	expr = strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$definition", ".*").Replace(expr)
	e, err := promQL.ParseExpr(expr)
	require.NoError(t, err, "%s: %s", where, expr)
	n := 0
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			n++
			require.True(t, known[vs.Name], "%s selects %q, which Sagaflow does not export", where, vs.Name)
		}
		return nil
	})
	require.Positive(t, n, "%s selects no metric", where)
}

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       map[string]string `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck map[string]any `yaml:"healthcheck"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	require.NoError(t, yaml.Unmarshal(read(t, "deploy/compose.yaml"), &c))
	return c
}

// flagsOf lists the flag names a command's source defines (cobra/pflag or the flag package).
func flagsOf(t *testing.T, files ...string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`(?:Var|VarP)\([^,]+,\s*"([a-z-]+)"`)
	out := map[string]bool{}
	for _, f := range files {
		for _, m := range re.FindAllStringSubmatch(string(read(t, f)), -1) {
			out[m[1]] = true
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	for _, s := range []string{"nats", "postgres", "jaeger", "prometheus", "grafana", "sagaflow", "orders", "inventory", "payment", "shipping"} {
		require.Contains(t, c.Services, s)
	}
	serveFlags := flagsOf(t, "cmd/sagaflow/serve.go", "cmd/sagaflow/telemetry.go", "cmd/sagaflow/auth.go")
	serviceFlags := flagsOf(t, "examples/order/cmd/order-service/main.go")
	apps := map[string]string{"sagaflow": "sagaflow", "orders": order.ServiceOrder, "inventory": order.ServiceInventory,
		"payment": order.ServicePayment, "shipping": order.ServiceShipping}
	for name, service := range apps {
		s := c.Services[name]
		require.Equal(t, "deploy/Dockerfile", s.Build["dockerfile"], name)
		require.Equal(t, "..", s.Build["context"], name)
		require.Equal(t, service, s.Environment["OTEL_SERVICE_NAME"], "%s reports its own service.name", name)
		require.Equal(t, "http://jaeger:4317", s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"], name)
		require.Equal(t, "grpc", s.Environment["OTEL_EXPORTER_OTLP_PROTOCOL"], name)
		for _, dep := range []string{"nats", "postgres"} {
			require.Equal(t, "service_healthy", s.DependsOn[dep].Condition, "%s waits for %s", name, dep)
		}
		// Every flag on the command line is one the binary defines.
		flags := serviceFlags
		if name == "sagaflow" {
			require.Equal(t, []string{"sagaflow", "serve"}, s.Command[:2])
			flags = serveFlags
		} else {
			require.Equal(t, "order-service", s.Command[0])
			require.Contains(t, s.Command, "--service="+service)
		}
		for _, arg := range s.Command[1:] {
			if flag, ok := strings.CutPrefix(arg, "--"); ok {
				flag, _, _ = strings.Cut(flag, "=")
				require.True(t, flags[flag], "%s: flag --%s is not defined by the binary", name, flag)
			}
		}
	}
	require.Equal(t, "http://localhost:16686/trace/{trace_id}", c.Services["sagaflow"].Environment["SAGAFLOW_TRACE_URL"])
	for _, name := range []string{"nats", "postgres"} {
		require.NotEmpty(t, c.Services[name].Healthcheck, "%s has a healthcheck", name)
	}
	// Bind mounts name files of this repository.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			_, err := os.Stat(filepath.Join(root, "deploy", src))
			require.NoError(t, err, "%s mounts %s", name, src)
		}
	}
	// The databases the services use are created by the init script.
	initSQL := string(read(t, "deploy/postgres/init.sql"))
	dbRE := regexp.MustCompile(`postgres://[^/]+/([a-z]+)\?`)
	for name, s := range c.Services {
		for _, arg := range s.Command {
			if m := dbRE.FindStringSubmatch(arg); m != nil {
				require.Contains(t, initSQL, "CREATE DATABASE "+m[1]+";", "%s's database", name)
			}
		}
	}
	// The example input in the comments is a valid order of the example's catalogue.
	m := regexp.MustCompile(`--input '([^']+)'`).FindStringSubmatch(string(read(t, "deploy/compose.yaml")))
	require.NotNil(t, m)
	var in order.Input
	dec := json.NewDecoder(strings.NewReader(m[1]))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&in))
	require.NotEmpty(t, in.Items)
	for _, it := range in.Items {
		require.Contains(t, order.SKUs(), it.SKU)
		require.Positive(t, it.Qty)
	}
}

func TestDockerfileBuildsBothBinaries(t *testing.T) {
	df := string(read(t, "deploy/Dockerfile"))
	require.Regexp(t, `(?m)^FROM golang:1\.26 AS build$`, df)
	for _, pkg := range []string{"./cmd/sagaflow", "./examples/order/cmd/order-service"} {
		require.Contains(t, df, "go build -trimpath -o /out/"+filepath.Base(pkg)+" "+pkg)
		_, err := os.Stat(filepath.Join(root, pkg))
		require.NoError(t, err)
	}
	require.Contains(t, df, "COPY --from=build /out/sagaflow /out/order-service /usr/local/bin/")
}

func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(read(t, "deploy/prometheus/prometheus.yml"), &cfg))
	require.Equal(t, []string{"alerts.yml"}, cfg.RuleFiles)
	_, err := os.Stat(filepath.Join(root, "deploy/prometheus", cfg.RuleFiles[0]))
	require.NoError(t, err)
	compose := loadCompose(t)
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	require.ElementsMatch(t, []string{"sagaflow:8080", "orders:9464", "inventory:9464", "payment:9464", "shipping:9464"}, targets)
	for _, target := range targets {
		host, port, _ := strings.Cut(target, ":")
		s, ok := compose.Services[host]
		require.True(t, ok, "target %s is a compose service", target)
		require.True(t, slices.ContainsFunc(s.Command, func(a string) bool { return strings.HasSuffix(a, ":"+port) }),
			"%s listens on %s", host, port)
	}
}

// anchors returns the GitHub anchors of the headings of a Markdown file.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	strip := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(string(read(t, path)), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			h = strings.TrimSpace(strings.TrimLeft(h, "#"))
			out[strings.ReplaceAll(strip.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
		}
	}
	return out
}

func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile(filepath.Join(root, "deploy/prometheus/alerts.yml"), false, model.UTF8Validation, promQL, slog.New(slog.DiscardHandler))
	require.Empty(t, errs)
	require.Len(t, groups.Groups, 1)
	known := knownMetrics(t)
	docAnchors := anchors(t, "docs/observability.md")
	severities := map[string]string{}
	for _, r := range groups.Groups[0].Rules {
		name := r.Alert
		require.NotEmpty(t, name, "recording rules are not expected")
		severities[name] = r.Labels["severity"]
		require.NotEmpty(t, r.Annotations["summary"], name)
		require.NotEmpty(t, r.Annotations["description"], name)
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], "https://github.com/sagaflow/sagaflow/blob/main/docs/observability.md#")
		require.True(t, ok, "%s: runbook_url points into docs/observability.md", name)
		require.Equal(t, strings.ToLower(name), anchor, name)
		require.True(t, docAnchors[anchor], "docs/observability.md has a section for %s", name)
		requireKnownMetrics(t, known, name, r.Expr)
	}
	require.Equal(t, map[string]string{
		"SagaflowSagaFailed": "page", "SagaflowLateEffect": "page", "SagaflowOutboxStuck": "page", "SagaflowDeadLetters": "ticket",
		"SagaflowNoProgress": "page", "SagaflowCompensationRateHigh": "warning", "SagaflowBusRecreated": "ticket",
		"SagaflowMessagesAbandoned": "ticket",
	}, severities)
}

func TestGrafanaDashboard(t *testing.T) {
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query struct {
					Query string `json:"query"`
				} `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int               `json:"id"`
			Title      string            `json:"title"`
			Datasource map[string]string `json:"datasource"`
			GridPos    struct{ X, Y, W, H int }
			Targets    []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(read(t, "deploy/grafana/dashboards/sagaflow.json"), &dash))
	require.Equal(t, "sagaflow", dash.UID)
	require.NotEmpty(t, dash.Title)
	require.Len(t, dash.Templating.List, 1)
	require.Equal(t, "definition", dash.Templating.List[0].Name)
	require.Equal(t, "label_values(sagaflow_sagas_started_total, definition)", dash.Templating.List[0].Query.Query)
	known := knownMetrics(t)
	ids := map[int]bool{}
	covered := map[string]bool{}
	for _, p := range dash.Panels {
		require.False(t, ids[p.ID], "panel id %d repeated", p.ID)
		ids[p.ID] = true
		require.Equal(t, "prometheus", p.Datasource["uid"], p.Title)
		require.Positive(t, p.GridPos.W*p.GridPos.H, "%s has a size", p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			requireKnownMetrics(t, known, p.Title, tg.Expr)
			for name := range known {
				if strings.Contains(tg.Expr, name) {
					covered[strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count")] = true
				}
			}
		}
	}
	for _, name := range []string{"sagaflow_sagas_started_total", "sagaflow_sagas_finished_total", "sagaflow_sagas_in_flight",
		"sagaflow_step_duration_seconds", "sagaflow_step_retries_total", "sagaflow_step_timeouts_total", "sagaflow_outbox_backlog",
		"sagaflow_outbox_oldest_unpublished_age_seconds", "sagaflow_relay_published_total", "sagaflow_dead_lettered_total",
		"sagaflow_late_effects_total"} {
		require.True(t, covered[name], "the dashboard shows %s", name)
	}

	var ds struct {
		Datasources []struct{ Name, UID, Type, URL string } `yaml:"datasources"`
	}
	require.NoError(t, yaml.Unmarshal(read(t, "deploy/grafana/provisioning/datasources/prometheus.yaml"), &ds))
	require.Len(t, ds.Datasources, 1)
	require.Equal(t, "prometheus", ds.Datasources[0].UID, "the dashboard's datasource uid")
	require.Equal(t, "http://prometheus:9090", ds.Datasources[0].URL)
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	require.NoError(t, yaml.Unmarshal(read(t, "deploy/grafana/provisioning/dashboards/sagaflow.yaml"), &prov))
	require.Len(t, prov.Providers, 1)
	// compose mounts deploy/grafana/dashboards where the provider looks.
	require.Contains(t, loadCompose(t).Services["grafana"].Volumes, "./grafana/dashboards:"+prov.Providers[0].Options.Path+":ro")
}

func TestNATSClusterConfig(t *testing.T) {
	opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy/nats/cluster.conf"))
	require.NoError(t, err)
	require.True(t, opts.JetStream)
	require.Equal(t, "sagaflow", opts.Cluster.Name)
	require.Equal(t, 6222, opts.Cluster.Port)
	require.Len(t, opts.Routes, 3)
	require.Equal(t, int32(1<<20), opts.MaxPayload)
	require.Equal(t, "nats-1", opts.ServerName)
}

// TestKubernetesProbes: every container of the Kubernetes manifests runs a sagaflow command that
// serves HTTP, is live on /healthz and ready on /readyz, both on the port that command listens on
// (--http for serve, --metrics for relay), and each flag it passes is one the binary defines.
func TestKubernetesProbes(t *testing.T) {
	type probe struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port int    `yaml:"port"`
		} `yaml:"httpGet"`
		TimeoutSeconds int `yaml:"timeoutSeconds"`
	}
	type manifest struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name           string   `yaml:"name"`
						Command        []string `yaml:"command"`
						LivenessProbe  *probe   `yaml:"livenessProbe"`
						ReadinessProbe *probe   `yaml:"readinessProbe"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	flags := flagsOf(t, "cmd/sagaflow/serve.go", "cmd/sagaflow/telemetry.go", "cmd/sagaflow/auth.go")
	dec := yaml.NewDecoder(strings.NewReader(string(read(t, "deploy/kubernetes/sagaflow.yaml"))))
	containers := 0
	for {
		var m manifest
		if err := dec.Decode(&m); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		if m.Kind != "Deployment" {
			continue
		}
		for _, c := range m.Spec.Template.Spec.Containers {
			containers++
			require.Equal(t, "sagaflow", c.Command[0], c.Name)
			listen := map[string]string{"serve": "--http=", "relay": "--metrics="}[c.Command[1]]
			require.NotEmpty(t, listen, "%s runs sagaflow serve or relay", c.Name)
			port := 0
			for _, arg := range c.Command[2:] {
				flag, ok := strings.CutPrefix(arg, "--")
				require.True(t, ok, "%s: %s", c.Name, arg)
				flag, _, _ = strings.Cut(flag, "=")
				require.True(t, flags[flag], "%s: flag --%s is not defined by the binary", c.Name, flag)
				if addr, ok := strings.CutPrefix(arg, listen); ok {
					_, p, _ := strings.Cut(addr, ":")
					port, _ = strconv.Atoi(p)
				}
			}
			require.Positive(t, port, "%s listens with %s", c.Name, listen)
			require.NotNil(t, c.LivenessProbe, c.Name)
			require.NotNil(t, c.ReadinessProbe, c.Name)
			require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path, "%s: liveness", c.Name)
			require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path, "%s: readiness", c.Name)
			require.Equal(t, port, c.LivenessProbe.HTTPGet.Port, c.Name)
			require.Equal(t, port, c.ReadinessProbe.HTTPGet.Port, c.Name)
			// /readyz runs its checks for up to 3 seconds: the probe must wait longer.
			require.Greater(t, c.ReadinessProbe.TimeoutSeconds, 3, c.Name)
		}
	}
	require.Equal(t, 2, containers)
}
