// Usage and API keys: budgets and remaining spend (GET /api/analytics/usage),
// and keys for third-party apps (create — shown once — list, revoke).
// Documents and billing are not built yet; nothing here pretends they are.

import { request } from './api.js';
import { dollarsToMicros, formatMicros, formatTime, h, showMain, toast } from './dom.js';

export async function showUsage() {
  const usageBox = h('section', { class: 'card', 'aria-labelledby': 'usage-h' }, h('h2', { id: 'usage-h' }, 'Usage this month'), h('p', {}, 'Loading…'));
  const keysBox = h('section', { class: 'card', 'aria-labelledby': 'keys-h' });
  showMain(h('div', { class: 'page' }, h('h1', {}, 'Usage & API keys'), usageBox, keysBox));
  renderKeys(keysBox);
  try {
    renderUsage(usageBox, await request('GET', '/api/analytics/usage'));
  } catch (e) {
    usageBox.replaceChildren(h('h2', { id: 'usage-h' }, 'Usage this month'), h('p', { class: 'error' }, e.message));
  }
}

function renderUsage(box, u) {
  const rows = u.budgets.map((b) => {
    const used = b.spent_micros + b.reserved_micros;
    const pct = b.limit_micros > 0 ? Math.min(100, Math.round((used * 100) / b.limit_micros)) : 0;
    return h('tr', {},
      h('th', { scope: 'row' }, `${b.scope} · ${b.period}`),
      h('td', {}, formatMicros(b.limit_micros)),
      h('td', {}, formatMicros(b.spent_micros)),
      h('td', {}, formatMicros(b.reserved_micros)),
      h('td', { class: 'remaining' }, formatMicros(b.remaining_micros)),
      h('td', {}, h('progress', { max: 100, value: pct, 'aria-label': `${pct}% of the ${b.period} ${b.scope} budget used` }), ` ${pct}%`));
  });
  box.replaceChildren(
    h('h2', { id: 'usage-h' }, 'Usage this month'),
    h('dl', { class: 'stats' },
      h('div', {}, h('dt', {}, 'Plan'), h('dd', { id: 'plan' }, u.plan)),
      h('div', {}, h('dt', {}, 'Requests'), h('dd', {}, String(u.month_requests))),
      h('div', {}, h('dt', {}, 'Tokens in / out'), h('dd', {}, `${u.month_input_tokens} / ${u.month_output_tokens}`)),
      h('div', {}, h('dt', {}, 'Spent'), h('dd', { id: 'month-cost' }, formatMicros(u.month_cost_micros)))),
    h('h3', {}, 'Budgets'),
    rows.length
      ? h('div', { class: 'table-wrap' }, h('table', { id: 'budgets' },
        h('thead', {}, h('tr', {}, ['Budget', 'Limit', 'Spent', 'Reserved', 'Remaining', 'Used'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows)))
      : h('p', {}, 'No budgets apply to your plan.'),
    h('p', { class: 'hint' }, 'Documents and billing are coming later.'));
}

async function renderKeys(box) {
  const reveal = h('div', { id: 'new-key', class: 'reveal', hidden: true, role: 'status' });
  const name = h('input', { id: 'key-name', required: true, maxlength: 100, autocomplete: 'off' });
  const budget = h('input', { id: 'key-budget', inputmode: 'decimal', placeholder: 'none', autocomplete: 'off' });
  const rpm = h('input', { id: 'key-rpm', type: 'number', min: 1, placeholder: 'plan default' });
  const form = h('form', { class: 'key-form', id: 'key-form' },
    h('div', { class: 'field' }, h('label', { for: 'key-name' }, 'Name'), name),
    h('div', { class: 'field' }, h('label', { for: 'key-budget' }, 'Monthly budget (USD)'), budget),
    h('div', { class: 'field' }, h('label', { for: 'key-rpm' }, 'Requests per minute'), rpm),
    h('button', { type: 'submit', class: 'primary' }, 'Create key'));
  const table = h('tbody', { id: 'key-rows' });
  box.replaceChildren(h('h2', { id: 'keys-h' }, 'API keys'),
    h('p', { class: 'hint' }, 'For the OpenAI-compatible API at /v1. A key is shown once, when it is created.'),
    form, reveal,
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Key', 'Budget', 'Last used', 'Created', ''].map((t) => h('th', { scope: 'col' }, t)))),
      table)));
  const refresh = async () => {
    const { keys } = await request('GET', '/api/keys');
    table.replaceChildren(...keys.map((k) => h('tr', { class: k.revoked_at ? 'revoked' : '' },
      h('td', {}, k.name),
      h('td', {}, h('code', {}, `${k.prefix}…`)),
      h('td', {}, k.budget_micros != null ? formatMicros(k.budget_micros) : '—'),
      h('td', {}, k.last_used_at ? formatTime(k.last_used_at) : 'never'),
      h('td', {}, formatTime(k.created_at)),
      h('td', {}, k.revoked_at ? 'revoked'
        : h('button', { type: 'button', class: 'link-btn danger-text', 'aria-label': `Revoke ${k.name}`, onclick: () => revoke(k) }, 'Revoke')))));
    if (!keys.length) table.append(h('tr', {}, h('td', { colspan: 6 }, 'No keys yet.')));
  };
  const revoke = async (k) => {
    if (!confirm(`Revoke "${k.name}"? Apps using it stop working at once.`)) return;
    await request('DELETE', `/api/keys/${k.id}`).catch((e) => toast(e.message, 'error'));
    refresh();
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim() };
    if (budget.value.trim()) {
      const micros = dollarsToMicros(budget.value);
      if (micros == null) return toast('Budget: a dollar amount such as 5 or 12.50', 'error');
      body.budget_micros = micros;
    }
    if (rpm.value) body.rate_limit_rpm = Number(rpm.value);
    try {
      const created = await request('POST', '/api/keys', body);
      const code = h('code', { id: 'new-key-value' }, created.key);
      reveal.replaceChildren(h('p', {}, h('strong', {}, 'Copy this key now; it will not be shown again.')), code,
        h('button', { type: 'button', class: 'link-btn', onclick: () => navigator.clipboard?.writeText(created.key) }, 'Copy'));
      reveal.hidden = false;
      form.reset();
      refresh();
    } catch (err) {
      toast(err.message, 'error');
    }
  });
  refresh().catch((e) => toast(e.message, 'error'));
}
