# Wharf: the commands a newcomer needs. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
PLUGINS := memcached http wharf replica cassandra
EXAMPLES := log-target revision-store
FIXTURES := misbehave

.PHONY: all deps test-deps build plugins polyglot image test soak demo demo-replica bench fuzz lint fmt clean

all: build

## deps: install what is missing for build, demo and the tests' local servers (wasm32-wasip2 target, memcached, libfaketime, MariaDB)
deps:
	@scripts/install-deps.sh

## test-deps: also tansu (Kafka protocol) and moto (SQS) for the backend tests,
## componentize-py and sdk/js's npm tools for Python and JavaScript plugins,
## podman for the container image's smoke test
test-deps: deps
	@scripts/queue-servers.sh install
	@scripts/polyglot-deps.sh
	@scripts/image-deps.sh

## build: target/release/wharf and target/plugins/<name>.wasm
build: deps
	$(CARGO) build --release --locked -p wharf
	@$(MAKE) --no-print-directory plugins

## plugins: every plugin component as target/plugins/<name>.wasm
plugins:
	$(CARGO) build --profile plugin --locked --target wasm32-wasip2 \
		$(foreach p,$(PLUGINS),-p wharf-plugin-$(p)) $(foreach e,$(EXAMPLES),-p wharf-example-$(e)) \
		$(foreach f,$(FIXTURES),-p wharf-fixture-$(f))
	@mkdir -p target/plugins
	@$(foreach p,$(PLUGINS),cp target/wasm32-wasip2/plugin/wharf_plugin_$(p).wasm target/plugins/$(p).wasm;)
	@$(foreach e,$(EXAMPLES),cp target/wasm32-wasip2/plugin/wharf_example_$(subst -,_,$(e)).wasm target/plugins/$(e).wasm;)
	@$(foreach f,$(FIXTURES),cp target/wasm32-wasip2/plugin/wharf_fixture_$(f).wasm target/plugins/fixture-$(f).wasm;)
	@ls -1 target/plugins/*.wasm

## polyglot: the Python and JavaScript example plugins as target/plugins/<name>.wasm
## (componentize-py, componentize-js; rebuilt only when their sources change)
polyglot: target/plugins/python-webhook.wasm target/plugins/js-webhook.wasm
PY_SDK := $(wildcard sdk/python/*.py sdk/python/wharf_sdk/*.py sdk/wit/*.wit sdk/wit/deps/*/*.wit)
JS_SDK := $(wildcard sdk/js/build.mjs sdk/js/package-lock.json sdk/js/src/*.js sdk/wit/*.wit sdk/wit/deps/*/*.wit)
target/plugins/python-webhook.wasm: $(wildcard examples/python-webhook/*.py) $(PY_SDK)
	@mkdir -p target/plugins
	componentize-py -q -d sdk/wit -w plugin componentize wharf_main -p sdk/python -p examples/python-webhook -o $@
target/plugins/js-webhook.wasm: $(wildcard examples/js-webhook/*.js) $(JS_SDK)
	@mkdir -p target/plugins examples/js-webhook/node_modules
	@ln -sfn ../../../sdk/js examples/js-webhook/node_modules/wharf-sdk
	node sdk/js/build.mjs examples/js-webhook/plugin.js -o $@

## image: the container image localhost/wharf:<version> (Containerfile): FROM scratch,
## wharf, the libraries it links and the shipped plugins, running as uid 65532;
## context collected in target/image-context/ (scripts/image-context.sh)
WHARF_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE ?= localhost/wharf:$(WHARF_VERSION)
PODMAN ?= podman --storage-driver vfs
# --layers=false: no intermediate images; the image it replaces is removed
# (vfs storage keeps a full copy of each).
image: build
	@PLUGINS="$(PLUGINS)" scripts/image-context.sh target/image-context
	@old=$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE) 2>/dev/null || true); \
	echo "$(PODMAN) build --layers=false -f Containerfile --build-arg VERSION=$(WHARF_VERSION) -t $(IMAGE) target/image-context"; \
	$(PODMAN) build --layers=false -f Containerfile --build-arg VERSION=$(WHARF_VERSION) -t $(IMAGE) target/image-context && \
	if [ -n "$$old" ] && [ "$$old" != "$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE))" ]; then \
		$(PODMAN) rmi "$$old" >/dev/null 2>&1 || true; \
	fi
	@$(PODMAN) image ls $(IMAGE)

## demo: a sidecar in front of a real memcached, end to end
demo: build
	@scripts/demo.sh

## demo-replica: a primary and a replica Wharf (docs/replication.md), each with its memcached
demo-replica: build
	@scripts/demo-replica.sh

## test: the whole suite, against real servers it starts itself
# One workspace-wide build with every target, so the binary the end-to-end
# tests run and the test crates share one feature set (no second compile).
test: test-deps
	$(CARGO) build --release --locked --workspace --all-targets
	@$(MAKE) --no-print-directory plugins polyglot
	$(CARGO) test --release --locked --workspace

## soak: the randomized fault schedule (tests/tests/nemesis.rs) for SOAK_SECONDS (default 300);
## make test runs it for 15 s. A failure prints the seed: WHARF_NEMESIS_SEED=<seed> make soak replays it.
SOAK_SECONDS ?= 300
soak: build
	WHARF_NEMESIS_SECS=$(SOAK_SECONDS) $(CARGO) test --release --locked --workspace --test nemesis -- --nocapture

## bench: benchmarks that print tables with their targets, MET or MISS (log vs raw disk, restart vs log size,
## Wasm vs native, durable API writes vs framework ceiling, Wharf vs Redis Streams, 1,000 idle namespaces, backends);
## installs redis and wrk
bench: build
	@scripts/bench-deps.sh
	$(CARGO) bench --locked -p wharf-log --bench append
	$(CARGO) bench --locked -p wharf-log --bench restart
	$(CARGO) bench --locked -p wharf-tests --bench delivery
	$(CARGO) bench --locked -p wharf-tests --bench api -- --fsync
	$(CARGO) bench --locked -p wharf-tests --bench peers
	$(CARGO) bench --locked -p wharf-tests --bench namespaces
	$(CARGO) bench --locked -p wharf-tests --bench sidecar_restart
	$(CARGO) bench --locked -p wharf-queue --bench backends

## fuzz: each fuzz target for FUZZ_SECONDS (default 60) seconds; not part of `make test` (docs/api.md, "Fuzzing")
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := http_json grpc_protobuf stored_record
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd host/wharf && for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none -O $$t fuzz/corpus/$$t fuzz/seeds/$$t \
			-- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
