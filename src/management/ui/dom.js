// DOM helpers. Everything from the API reaches the page as text nodes or attribute values set
// through the DOM (never as markup): names come from clients and may hold anything.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'selected' || k === 'disabled') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// h('a', {href: '#/x', class: 'y'}, 'text', child, …)
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Replace an element's children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- formatting -------------------------------------------------------------------------------

export function num(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 1 });
}

export function rate(r) {
  if (r === undefined || r === null) return '–';
  return `${num(r)}/s`;
}

export function bytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

export function when(ms) {
  if (!ms) return '–';
  return new Date(ms).toLocaleString('en-GB', { hour12: false });
}

// A value for a table cell: JSON for objects, text otherwise.
export function plain(v) {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// Tags (a list or RabbitMQ's comma-separated string) as little labels.
export function tags(list) {
  const items = Array.isArray(list) ? list : String(list || '').split(',').filter(Boolean);
  return items.map((t) => h('span', { class: 'tag' }, t));
}

// A rate from a `message_stats` object: stats[key + '_details'].rate, or undefined.
export function statRate(stats, key) {
  return stats && stats[`${key}_details`] ? stats[`${key}_details`].rate : undefined;
}

// ---- notices ----------------------------------------------------------------------------------

export function notify(text, bad = false) {
  const box = document.getElementById('notices');
  const n = h('div', { class: bad ? 'notice bad' : 'notice', role: bad ? 'alert' : 'status', title: 'Click to dismiss', onclick: () => n.remove() }, text);
  box.append(n);
  while (box.children.length > 4) box.firstChild.remove();
  setTimeout(() => n.remove(), bad ? 9000 : 4000);
}

export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err instanceof Error ? err.message : String(err));
}

// Run an action from a button or form: disable it meanwhile, report success or the API's error.
export async function act(control, fn, success) {
  if (control) control.disabled = true;
  try {
    const r = await fn();
    if (success) notify(typeof success === 'function' ? success(r) : success);
    return r;
  } catch (e) {
    notify(e.message, true);
    return undefined;
  } finally {
    if (control) control.disabled = false;
  }
}

// ---- tables -----------------------------------------------------------------------------------

// columns: [{label, cell(row) → node|text, num?, sort? (API sort key), key? (the cell's data-col)}]
// sort: {key, reverse, onSort(key)} makes headers with a sort key clickable.
export function table(columns, rows, { sort, empty = 'Nothing to show', id, rowKey } = {}) {
  const head = h(
    'tr',
    null,
    columns.map((c) => {
      const cls = [c.num ? 'num' : '', c.sort && sort ? 'sortable' : ''];
      if (sort && c.sort && sort.key === c.sort) cls.push('sorted', sort.reverse ? 'reverse' : '');
      return h(
        'th',
        {
          class: cls.filter(Boolean).join(' ') || null,
          dataset: c.sort ? { sort: c.sort } : undefined,
          onclick: sort && c.sort ? () => sort.onSort(c.sort) : undefined,
        },
        c.label,
      );
    }),
  );
  const body = rows.length
    ? rows.map((r) =>
        h(
          'tr',
          { dataset: rowKey ? { key: rowKey(r) } : undefined },
          columns.map((c) => h('td', { class: c.num ? 'num' : null, dataset: c.key ? { col: c.key } : undefined }, c.cell(r))),
        ),
      )
    : [h('tr', null, h('td', { class: 'empty', colspan: columns.length }, empty))];
  return h('table', { id }, h('thead', null, head), h('tbody', null, body));
}

// ---- forms ------------------------------------------------------------------------------------

// A labelled grid form. fields: [[label, input], …]; submit(form, button) on submit.
export function form(fields, submitLabel, submit, { id, extra } = {}) {
  const button = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const f = h(
    'form',
    { class: 'form', id },
    fields.map(([label, input]) => [h('label', { class: 'for', for: input.id || null }, label), input]),
    h('div', { class: 'actions' }, button, extra),
  );
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    act(button, () => submit(f, button));
  });
  return f;
}

export function input(name, attrs = {}) {
  return h('input', { name, id: attrs.id || `f-${name}`, ...attrs });
}

export function select(name, options, attrs = {}) {
  return h(
    'select',
    { name, id: attrs.id || `f-${name}`, ...attrs },
    options.map((o) => {
      const [value, label] = Array.isArray(o) ? o : [o, o];
      return h('option', { value, selected: attrs.value === value }, label);
    }),
  );
}

export function textarea(name, attrs = {}) {
  return h('textarea', { name, id: attrs.id || `f-${name}`, ...attrs });
}

// "key = value" lines → an object; numbers and true/false become JSON values.
export function parseArgs(text) {
  const out = {};
  for (const line of String(text || '').split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    if (i < 1) throw new Error(`"${t}" is not key = value`);
    const k = t.slice(0, i).trim();
    const v = t.slice(i + 1).trim();
    if (/^-?\d+(\.\d+)?$/.test(v)) out[k] = Number(v);
    else if (v === 'true' || v === 'false') out[k] = v === 'true';
    else out[k] = v;
  }
  return out;
}

export function facts(pairs) {
  return h(
    'dl',
    { class: 'facts' },
    pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]),
  );
}

export function yesNo(b) {
  return b ? 'yes' : 'no';
}
