# zimmer-sidecar: the two quick-start commands are `make demo` and `make test`.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/zimmer-sidecar

.PHONY: build demo test test-short bench fuzz lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/zimmer-sidecar

# Runs the sidecar in front of the example Python app (examples/python-app).
demo: build
	./scripts/demo.sh

# The whole test suite, as CI runs it: installs what the tests need first.
test:
	./scripts/test.sh

# Unit tests only, no installs, for a quick loop.
test-short:
	$(GO) test -short ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin data
