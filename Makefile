# mqttgw — make run: the gateway on config.toml.example with the embedded broker;
# make test: installs what tests need (Mosquitto, libcoap clients), runs every test.
GO        ?= go
BIN       := bin/mqttgw
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME  ?= 15s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Debian versions start with a digit: tag v1.2.3 is 1.2.3, an untagged tree 0.0.0~git<hash>.
PKG_VERSION ?= $(or $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed -e 's/^v//' -e 's/-/+/g'),0.0.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo dev))

.PHONY: run build test soak deps lint fuzz bench bench-micro clean package package-test

run: build
	./$(BIN) run --config config.toml.example

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/mqttgw

deps:
	bash scripts/install-test-deps.sh

# MQTTGW_LONG_TESTS=1 also runs the tests that must wait out real time (a CoAP
# observation idle for 90 s); they run in parallel with the other packages.
# In CI the long lossy-link soak (make soak) runs too, and the Debian
# package is built, installed and checked (scripts/package-test.sh); locally
# those take minutes or change the machine, so they are `make soak` and
# `make package-test`.
test: deps
	MQTTGW_LONG_TESTS=1 $(GO) test -race -count=1 -timeout 20m ./...
	@if [ "$$CI" = true ]; then $(MAKE) soak package-test; fi

# The long variants of the lossy-link tests (issue 10): 100 devices × 100
# messages through the fault relay (internal/faultrelay), a new seed each run
# (logged; MQTTGW_FAULT_SEED=N replays one), beside the short Lossy tests.
soak:
	MQTTGW_SOAK=1 $(GO) test -race -count=1 -run 'Soak|Lossy' ./gateway/

# mqttgw_VERSION_amd64.deb in bin/: the static binary, /etc/mqttgw/config.toml
# (a conffile made from config.toml.example, pointed at a local Mosquitto), the
# systemd unit and mqttgw(1) generated from the CLI's own help. nFPM is a Go tool
# dependency (go.mod), so nothing is downloaded here.
package:
	rm -rf bin/package bin/mqttgw_*.deb && mkdir -p bin/package
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(PKG_VERSION)" -o bin/package/mqttgw ./cmd/mqttgw
	sh packaging/mkconfig.sh config.toml.example > bin/package/config.toml
	bin/package/mqttgw check bin/package/config.toml
	bin/package/mqttgw man | gzip -9n > bin/package/mqttgw.1.gz
	MQTTGW_VERSION=$(PKG_VERSION) $(GO) tool nfpm package --config packaging/nfpm.yaml --packager deb --target bin/

package-test: package
	bash scripts/package-test.sh bin/mqttgw_$(PKG_VERSION)_amd64.deb

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

# The standard matrix (issue 11): its own Mosquitto and gateway on free loopback
# ports, every path beside its direct baseline, a Markdown table on standard
# output and in bin/bench.md; about 5 minutes on a quiet machine. BENCH_SCALE
# scales the message counts (0.05: a smoke run); BENCH_FLAGS adds bench flags
# (--pin=false, --max-clients N).
BENCH_SCALE ?= 1
BENCH_FLAGS ?=
bench: build
	./$(BIN) bench --matrix --scale $(BENCH_SCALE) --out bin/bench.md $(BENCH_FLAGS)

# The Go micro-benchmarks.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./mapping/ ./mqttsn/

clean:
	rm -rf bin
