// Builds the JavaScript example policies with componentize-js (npm): each directory's
// policy.js against wit/ and the world named in its `world` file, into OUT (default: here).
//
//   npm install && node build.mjs [OUT]
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? here;
await mkdir(out, { recursive: true });
for (const entry of await readdir(here, { withFileTypes: true })) {
  if (!entry.isDirectory() || entry.name === "node_modules") continue;
  const dir = join(here, entry.name);
  const worldName = (await readFile(join(dir, "world"), "utf8")).trim();
  const { component } = await componentize({
    sourcePath: join(dir, "policy.js"),
    witPath: join(here, "..", "..", "wit"),
    worldName,
    // A policy has no clock, randomness, stdio or network.
    disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
  });
  const file = join(out, `${entry.name.replaceAll("-", "_")}.wasm`);
  await writeFile(file, component);
  console.log(`${file}: ${component.length} bytes`);
}
