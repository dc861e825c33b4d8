// Model output → safe DOM. Markdown (GFM) by marked; raw HTML in the output is
// shown as text rather than interpreted; the result then passes DOMPurify anyway,
// and the page's CSP allows no inline script, so model output never runs code.
// Finished answers get highlighted code blocks with a copy button. Loaded lazily
// by the chat view, so the sign-in page does not download it.

import { marked } from './vendor/marked.js';
import DOMPurify from './vendor/purify.js';
import hljs from './vendor/highlight.js';
import bash from './vendor/languages/bash.js';
import c from './vendor/languages/c.js';
import cpp from './vendor/languages/cpp.js';
import css from './vendor/languages/css.js';
import go from './vendor/languages/go.js';
import java from './vendor/languages/java.js';
import javascript from './vendor/languages/javascript.js';
import json from './vendor/languages/json.js';
import markdown from './vendor/languages/markdown.js';
import python from './vendor/languages/python.js';
import rust from './vendor/languages/rust.js';
import sql from './vendor/languages/sql.js';
import typescript from './vendor/languages/typescript.js';
import xml from './vendor/languages/xml.js';
import yaml from './vendor/languages/yaml.js';
import { h } from './dom.js';

const LANGUAGES = { bash, c, cpp, css, go, java, javascript, json, markdown, python, rust, sql, typescript, xml, yaml };
for (const [name, lang] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, lang);
hljs.configure({ ignoreUnescapedHTML: true });

const escapeHtml = (s) =>
  s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]);

marked.use({
  gfm: true,
  breaks: false,
  renderer: {
    // Raw HTML blocks and inline tags are displayed, not rendered.
    html(token) {
      return escapeHtml(token.text ?? token.raw ?? '');
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'srcset'],
  ALLOW_DATA_ATTR: false,
};

// Links from model output open in a new tab without access to this one.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
  if (node.tagName === 'IMG') node.setAttribute('loading', 'lazy');
});

/** Renders `text` into `el`; `final` adds highlighting and copy buttons. */
export function renderMarkdown(el, text, final) {
  const html = marked.parse(text, { async: false });
  el.innerHTML = DOMPurify.sanitize(html, PURIFY);
  if (final) enhanceCode(el);
}

function enhanceCode(root) {
  for (const code of root.querySelectorAll('pre > code')) {
    const lang = /language-([\w-]+)/.exec(code.className)?.[1];
    if (lang && hljs.getLanguage(lang)) hljs.highlightElement(code);
    const pre = code.parentElement;
    const button = h(
      'button',
      { type: 'button', class: 'copy-btn', 'aria-label': 'Copy code' },
      'Copy',
    );
    button.addEventListener('click', () => copy(code.textContent, button));
    pre.classList.add('has-copy');
    pre.prepend(button);
  }
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Copy failed';
  }
  setTimeout(() => (button.textContent = 'Copy'), 1500);
}
