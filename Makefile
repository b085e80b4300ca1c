# mqttgw — make run: the gateway on config.toml.example with the embedded broker;
# make test: installs what tests need (Mosquitto, libcoap clients), runs every test.
GO        ?= go
BIN       := bin/mqttgw
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME  ?= 15s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run build test deps lint fuzz bench clean

run: build
	./$(BIN) run --config config.toml.example

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/mqttgw

deps:
	bash scripts/install-test-deps.sh

# MQTTGW_LONG_TESTS=1 also runs the tests that must wait out real time (a CoAP
# observation idle for 90 s); they run in parallel with the other packages.
test: deps
	MQTTGW_LONG_TESTS=1 $(GO) test -race -count=1 -timeout 20m ./...

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Each fuzz target for FUZZTIME; the seed corpus lives in each package's testdata/.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./mapping/ ./mqttsn/

clean:
	rm -rf bin
