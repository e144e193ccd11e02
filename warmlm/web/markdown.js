// A small, safe Markdown renderer: the text is HTML-escaped FIRST, then only this file's own
// tags are added. Nothing the model writes can become markup (no raw HTML, no attributes).
// Supported: fenced code (with a copy button), inline code, headings, bold, italics,
// strikethrough, lists, block quotes, rules, http(s) links, paragraphs.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Inline spans of one already-escaped line. Code spans and links are cut out first (so that
// nothing rewrites their content or attributes), then put back at the end.
function inline(escaped) {
  const saved = [];
  const keep = (html) => `\u0000${saved.push(html) - 1}\u0000`;
  let s = escaped.replace(/`([^`\n]+)`/g, (_, code) => keep(`<code>${code}</code>`));
  s = s.replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/g, (_, label, url) =>
    keep(`<a href="${url}" target="_blank" rel="noopener noreferrer">${emphasis(label)}</a>`));
  return emphasis(s).replace(/\u0000(\d+)\u0000/g, (_, i) => saved[Number(i)]);
}

function emphasis(s) {
  return s
    .replace(/\*\*(?=\S)([^*]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/__(?=\S)([^_]*?\S)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(?=\S)([^*\n]*?\S)\*(?![*\w])/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_(?=\S)([^_\n]*?\S)_(?![_\w])/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([^~]*?\S)~~/g, "<del>$1</del>");
}

function codeBlock(lang, lines) {
  const label = lang ? `<span class="lang">${lang}</span>` : "<span></span>";
  return (
    `<div class="code"><div class="code-head">${label}` +
    `<button type="button" class="copy" aria-label="Copy code">Copy</button></div>` +
    `<pre><code>${lines.join("\n")}</code></pre></div>`
  );
}

const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s*&gt;\s?(.*)$/;

function isBlockStart(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) ||
    BULLET.test(line) || NUMBERED.test(line) || QUOTE.test(line);
}

// Markdown to an HTML string made only of this renderer's tags. An unclosed fence (as while
// a reply is still streaming) runs to the end of the text.
export function renderMarkdown(text) {
  const clean = String(text).replace(/\u0000/g, "\ufffd").replace(/\r\n?/g, "\n");
  const lines = escapeHtml(clean).split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence
      out.push(codeBlock(fence[2], body));
    } else if (!line.trim()) {
      i += 1;
    } else if (HEADING.test(line)) {
      const [, hashes, title] = line.match(HEADING);
      out.push(`<h${hashes.length}>${inline(title)}</h${hashes.length}>`);
      i += 1;
    } else if (RULE.test(line)) {
      out.push("<hr>");
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].match(QUOTE)[1]);
      out.push(`<blockquote>${inline(body.join("<br>"))}</blockquote>`);
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const items = [];
      while (i < lines.length && pattern.test(lines[i])) {
        const m = lines[i++].match(pattern);
        items.push(`<li>${inline(ordered ? m[2] : m[1])}</li>`);
      }
      const start = ordered ? Number(line.match(NUMBERED)[1]) : 1;
      const tag = ordered ? (start !== 1 ? `ol start="${start}"` : "ol") : "ul";
      out.push(`<${tag}>${items.join("")}</${ordered ? "ol" : "ul"}>`);
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && (!para.length || !isBlockStart(lines[i]))) {
        para.push(lines[i++]);
      }
      out.push(`<p>${inline(para.join("<br>"))}</p>`);
    }
  }
  return out.join("");
}
