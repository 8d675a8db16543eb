# Wharf: the commands a newcomer needs. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
PLUGINS := memcached http
EXAMPLES := log-target
FIXTURES := misbehave

.PHONY: all deps test-deps build plugins test demo bench fuzz lint fmt clean

all: build

## deps: install what is missing for build and demo (wasm32-wasip2 target, memcached)
deps:
	@scripts/install-deps.sh

## test-deps: also tansu (Kafka protocol) and moto (SQS) for the backend tests
test-deps: deps
	@scripts/queue-servers.sh install

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

## demo: a sidecar in front of a real memcached, end to end
demo: build
	@scripts/demo.sh

## test: the whole suite, against real servers it starts itself
# One workspace-wide build with every target, so the binary the end-to-end
# tests run and the test crates share one feature set (no second compile).
test: test-deps
	$(CARGO) build --release --locked --workspace --all-targets
	@$(MAKE) --no-print-directory plugins
	$(CARGO) test --release --locked --workspace

## bench: benchmarks that print tables (log vs raw disk, Wasm vs native, API vs framework ceiling, backends)
bench: build
	$(CARGO) bench --locked -p wharf-log --bench append
	$(CARGO) bench --locked -p wharf-tests --bench delivery
	$(CARGO) bench --locked -p wharf-tests --bench api
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
