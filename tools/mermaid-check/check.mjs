// Reads Mermaid text on stdin and parses it with Mermaid's own parser; exit 1 on error.
// Mermaid needs a DOM (DOMPurify); jsdom provides one without a browser.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");

let text = "";
for await (const chunk of process.stdin) text += chunk;
try {
  const result = await mermaid.parse(text);
  console.log(`ok ${result.diagramType}`);
} catch (err) {
  console.error(`invalid mermaid: ${err.message.split("\n").slice(0, 4).join(" | ")}`);
  process.exit(1);
}
