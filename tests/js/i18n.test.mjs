// Every string key used by the pages exists in English and Chinese, and both files have the same keys.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "../../omniserve/web");
const en = JSON.parse(readFileSync(join(web, "static/i18n/en.json"), "utf8"));
const zh = JSON.parse(readFileSync(join(web, "static/i18n/zh.json"), "utf8"));

function walk(dir, ext) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? walk(join(dir, d.name), ext) : d.name.endsWith(ext) ? [join(dir, d.name)] : []);
}

test("en and zh have the same keys and no empty strings", () => {
  assert.deepEqual(Object.keys(zh).sort(), Object.keys(en).sort());
  for (const [k, v] of Object.entries(zh)) assert.ok(v.trim(), `zh ${k} empty`);
});

test("placeholders match between languages", () => {
  const vars = (s) => (s.match(/\{\w+\}/g) || []).sort().join(",");
  for (const k of Object.keys(en)) assert.equal(vars(zh[k]), vars(en[k]), k);
});

test("every key used in HTML and JS exists", () => {
  const used = new Set();
  for (const f of walk(web, ".html")) {
    for (const m of readFileSync(f, "utf8").matchAll(/data-i18n(?:-placeholder|-title)?="([^"]+)"/g)) used.add(m[1]);
  }
  for (const f of walk(join(web, "static/js"), ".js")) {
    for (const m of readFileSync(f, "utf8").matchAll(/\bt\("(\w+\.[\w.]+)"/g)) used.add(m[1]);
  }
  const missing = [...used].filter((k) => !(k in en));
  assert.deepEqual(missing, []);
});
