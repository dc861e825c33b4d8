#!/usr/bin/env bash
# Build the browser client (web/): fetch its three libraries from npm (pinned by
# web/package-lock.json) and copy the files the page loads into web/assets/vendor/.
# There is no bundler: everything else under web/ is served as written.
# Idempotent: with node_modules matching the lock file it only re-copies (~0.1 s).
set -euo pipefail

web="$(cd "$(dirname "${BASH_SOURCE[0]}")/../web" && pwd)"
log() { printf '[web] %s\n' "$*"; }

command -v npm >/dev/null 2>&1 || { echo "[web] ERROR: npm not found (Node 20 + npm are required)" >&2; exit 1; }

stamp="$web/node_modules/.lock-sha256"
want=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "npm packages: up to date"
else
  log "npm packages: installing (npm ci)"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi

nm="$web/node_modules"
out="$web/assets/vendor"
mkdir -p "$web/assets"
tmp=$(mktemp -d "$web/assets/.vendor.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/languages"
# Source-map comments point at files we do not ship; drop them.
strip() { sed -e '/^\/\/# sourceMappingURL=/d' "$1" > "$2"; }
strip "$nm/marked/lib/marked.esm.js" "$tmp/marked.js"
strip "$nm/dompurify/dist/purify.es.mjs" "$tmp/purify.js"
strip "$nm/@highlightjs/cdn-assets/es/core.min.js" "$tmp/highlight.js"
# The languages code blocks are highlighted in; others render as plain code.
for lang in bash css go java javascript json markdown python rust sql typescript xml yaml c cpp; do
  strip "$nm/@highlightjs/cdn-assets/es/languages/$lang.min.js" "$tmp/languages/$lang.js"
done
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "vendor files: $(du -sb "$out" | cut -f1) bytes in web/assets/vendor/"
