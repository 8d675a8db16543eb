#!/usr/bin/env node
// Build a JavaScript Wharf plugin into a component:
//
//   node <sdk>/js/build.mjs plugin.js -o plugin.wasm
//
// `plugin.js` default-exports a class extending `Target` (from "wharf-sdk").
// The plugin and the SDK are bundled into one module (rolldown), with the
// SDK's host services switched to the WIT imports, and componentize-js
// turns it into a `wharf:target@0.2.0` component that can also use
// `wasi:http` through `fetch` (the world in `<sdk>/wit`).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { componentize } from "@bytecodealliance/componentize-js";
import { rolldown } from "rolldown";

const sdk = dirname(fileURLToPath(import.meta.url));
const src = join(sdk, "src");

function usage(problem) {
  console.error(`error: ${problem}\nusage: node ${process.argv[1]} <plugin.js> -o <out.wasm>`);
  process.exit(2);
}

const args = process.argv.slice(2);
const o = args.indexOf("-o");
if (o < 0 || o + 1 >= args.length) usage("missing -o <out.wasm>");
const out = resolve(args[o + 1]);
const inputs = args.filter((_, i) => i !== o && i !== o + 1);
if (inputs.length !== 1) usage("give exactly one plugin module");
const entry = resolve(inputs[0]);

const work = await mkdtemp(join(tmpdir(), "wharf-js-build-"));
try {
  const wrapper = join(work, "entry.js");
  await writeFile(
    wrapper,
    [
      `import Plugin from ${JSON.stringify(entry)};`,
      `import { wasmExports } from ${JSON.stringify(join(src, "wasm.js"))};`,
      `const target = wasmExports(Plugin);`,
      `export async function init(config) { return target.init(config); }`,
      `export async function deliver(batch) { return target.deliver(batch); }`,
      `export function describe() { return target.describe(); }`,
      "",
    ].join("\n"),
  );
  const bundle = await rolldown({
    input: wrapper,
    external: [/^(wharf|wasi):/],
    platform: "neutral",
    logLevel: "warn",
    plugins: [
      {
        name: "wharf-sdk",
        resolveId(source, importer) {
          if (source === "wharf-sdk") return join(src, "index.js");
          if (source === "wharf-sdk/testing") {
            this.error("wharf-sdk/testing is for native tests; a plugin must not import it");
          }
          if (source === "./host.js" && importer && dirname(importer) === src) return join(src, "host-wasm.js");
          return null;
        },
      },
    ],
  });
  const bundled = join(work, "bundle.js");
  await bundle.write({ file: bundled, format: "es" });
  await bundle.close();
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: join(sdk, "..", "wit"),
    worldName: "plugin",
  });
  await writeFile(out, component);
  console.error(`built ${out} (${(component.byteLength / 1048576).toFixed(1)} MiB)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
