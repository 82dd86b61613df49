// Bundles the console into dist/: dist/assets/ holds the script and the
// stylesheet under content-hashed names (cached for a year by the server),
// dist/index.html names them (never cached). No inline script or style.
import { build } from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";

const dist = "dist";
await rm(dist, { recursive: true, force: true });
await mkdir(path.join(dist, "assets"), { recursive: true });

const result = await build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: path.join(dist, "assets"),
  entryNames: "[name]-[hash]",
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((file) => "/" + path.relative(dist, file));
const script = outputs.find((file) => file.endsWith(".js"));
const stylesheet = outputs.find((file) => file.endsWith(".css"));
if (script === undefined || stylesheet === undefined) {
  throw new Error(`esbuild wrote no script or no stylesheet: ${outputs.join(", ")}`);
}
const template = await readFile("src/index.html", "utf8");
await writeFile(
  path.join(dist, "index.html"),
  template.replace("%SCRIPT%", script).replace("%STYLESHEET%", stylesheet),
);
console.log(`console built: ${dist}/index.html, ${script}, ${stylesheet}`);
