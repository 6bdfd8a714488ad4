# Sagaflow developer tasks. `make help` lists them.
.DEFAULT_GOAL := help
GO ?= go

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: test
test: ## the whole suite, exactly as the README and CI run it (finds or starts PostgreSQL)
	bash scripts/test.sh

.PHONY: test-race
test-race: ## every package with -race (needs a PostgreSQL: see scripts/test.sh)
	$(GO) test -race -count=1 ./...

.PHONY: vet
vet: ## gofmt check and go vet
	@test -z "$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*'))" || (gofmt -l . && false)
	$(GO) vet ./...

.PHONY: lint
lint: ## golangci-lint with the checked-in .golangci.yml (pinned version)
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run ./...

.PHONY: bench
bench: ## Go benchmarks, 10 runs each, for benchstat (see docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem -count 10 ./saga/ | tee bench-saga.txt

.PHONY: fuzz
fuzz: ## a minute of each fuzz target
	$(GO) test -run '^$$' -fuzz FuzzApply -fuzztime 60s ./saga/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./definitions/

.PHONY: build
build: ## build bin/sagaflow
	$(GO) build -o bin/sagaflow ./cmd/sagaflow
