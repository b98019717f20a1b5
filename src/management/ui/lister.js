// A paged, filterable, sortable list of queues or exchanges, using the API's own paging
// (`page`, `page_size`, `name`, `use_regex`, `sort`, `sort_reverse`) and its envelope
// `{items, page, page_count, filtered_count, item_count, total_count, page_size}`.

import { get, path, query, selectedVhost } from './api.js';
import { h, fill, table, errorBox, num } from './dom.js';

const SIZES = [20, 50, 100, 500];

export class Lister {
  // kind: the API collection ("queues", "exchanges"); noun: what the counts call them.
  constructor(kind, noun) {
    this.kind = kind;
    this.noun = noun;
    this.state = { filter: '', regex: false, sort: 'name', reverse: false, page: 1, pageSize: 20 };
    this.columns = [];
    this.latest = 0; // a click's refresh may overtake the periodic one: show only the newest
    const s = this.state;
    let debounce;
    this.filter = h('input', {
      type: 'search',
      id: `${kind}-filter`,
      placeholder: 'Filter by name',
      'aria-label': 'Filter by name',
      oninput: () => {
        clearTimeout(debounce);
        debounce = setTimeout(() => {
          s.filter = this.filter.value;
          s.page = 1;
          this.refresh();
        }, 300);
      },
    });
    this.regex = h('input', {
      type: 'checkbox',
      id: `${kind}-regex`,
      onchange: () => {
        s.regex = this.regex.checked;
        s.page = 1;
        this.refresh();
      },
    });
    this.size = h(
      'select',
      {
        id: `${kind}-page-size`,
        'aria-label': 'Page size',
        onchange: () => {
          s.pageSize = Number(this.size.value);
          s.page = 1;
          this.refresh();
        },
      },
      SIZES.map((n) => h('option', { value: n }, `${n} per page`)),
    );
    this.counts = h('span', { class: 'muted', id: `${kind}-counts` });
    this.prev = h('button', { type: 'button', class: 'small', onclick: () => this.go(-1) }, '‹ Prev');
    this.next = h('button', { type: 'button', class: 'small', onclick: () => this.go(1) }, 'Next ›');
    this.pageLabel = h('span', { id: `${kind}-page` });
    this.body = h('div');
    this.element = h(
      'div',
      { class: 'panel' },
      h(
        'div',
        { class: 'table-tools' },
        this.filter,
        h('label', { class: 'inline' }, this.regex, 'Regex'),
        this.counts,
        h('div', { class: 'pager' }, this.size, this.prev, this.pageLabel, this.next),
      ),
      this.body,
    );
  }

  go(delta) {
    this.state.page = Math.max(1, this.state.page + delta);
    this.refresh();
  }

  sortBy(key) {
    const s = this.state;
    s.reverse = s.sort === key ? !s.reverse : false;
    s.sort = key;
    this.refresh();
  }

  url() {
    const s = this.state;
    const vhost = selectedVhost();
    const base = vhost ? path(this.kind, vhost) : path(this.kind);
    return (
      base +
      query({
        page: s.page,
        page_size: s.pageSize,
        name: s.filter,
        use_regex: s.regex ? 'true' : 'false',
        sort: s.sort,
        sort_reverse: s.reverse ? 'true' : 'false',
      })
    );
  }

  async refresh(columns) {
    if (columns) this.columns = columns;
    const s = this.state;
    // Keep the controls as the state says (the page may have been rebuilt).
    this.filter.value = s.filter;
    this.regex.checked = s.regex;
    this.size.value = String(s.pageSize);
    const seq = ++this.latest;
    let r;
    try {
      r = await get(this.url());
      if (seq !== this.latest) return;
    } catch (e) {
      if (seq !== this.latest) return;
      if (e.status === 400 && s.page > 1 && /page/.test(e.message)) {
        s.page = 1; // fewer pages than before
        return this.refresh();
      }
      fill(this.body, errorBox(e));
      return;
    }
    s.page = r.page;
    this.prev.disabled = r.page <= 1;
    this.next.disabled = r.page >= r.page_count;
    this.pageLabel.textContent = `Page ${r.page} of ${r.page_count}`;
    this.counts.textContent =
      r.filtered_count === r.total_count
        ? `${num(r.total_count)} ${this.noun}`
        : `${num(r.filtered_count)} of ${num(r.total_count)} ${this.noun} match`;
    const sort = { key: s.sort, reverse: s.reverse, onSort: (k) => this.sortBy(k) };
    fill(
      this.body,
      table(this.columns, r.items, { sort, id: `${this.kind}-table`, rowKey: (x) => x.name, empty: `No ${this.noun}` }),
    );
  }
}
