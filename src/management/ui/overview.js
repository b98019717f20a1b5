// The overview: totals, queued messages and message rates over time, listeners.

import { get, query, SAMPLES } from './api.js';
import { History, lineChart, trackLevels, trackRates } from './chart.js';
import { h, fill, num, rate, statRate, table, errorBox, facts } from './dom.js';

// Kept across visits, so that coming back to the page keeps what was plotted.
const history = new History();

const LEVELS = [
  ['messages_ready', 'Ready'],
  ['messages_unacknowledged', 'Unacked'],
  ['messages', 'Total'],
];

export const RATES = [
  ['publish', 'Publish'],
  ['confirm', 'Publisher confirm'],
  ['deliver_get', 'Deliver / get'],
  ['ack', 'Consumer ack'],
  ['redeliver', 'Redelivered'],
  ['return_unroutable', 'Unroutable (return)'],
  ['drop_unroutable', 'Unroutable (drop)'],
];

export function levelChart(hist, prefix, obj, id) {
  return lineChart({
    id,
    title: 'Queued messages',
    format: num,
    series: LEVELS.map(([k, label]) => ({ label, points: hist.points(prefix + k), value: obj ? obj[k] : undefined })),
  });
}

export function rateChart(hist, prefix, stats, id) {
  return lineChart({
    id,
    title: 'Message rates',
    format: rate,
    series: RATES.filter(([k]) => stats && stats[`${k}_details`]).map(([k, label]) => ({
      label,
      points: hist.points(prefix + k),
      value: statRate(stats, k),
    })),
  });
}

export function mount(main) {
  const tiles = h('div', { class: 'tiles', id: 'totals' });
  const levels = h('div', { class: 'panel' }, h('h2', null, 'Queued messages'), h('div'));
  const rates = h('div', { class: 'panel' }, h('h2', null, 'Message rates'), h('div'));
  const node = h('div', { class: 'panel' });
  const err = h('div');
  fill(main, h('h1', null, 'Overview'), err, tiles, h('div', { class: 'grid2' }, levels, rates), h('br'), node);

  async function refresh() {
    let o;
    try {
      o = await get('/api/overview' + query(SAMPLES));
    } catch (e) {
      fill(err, errorBox(e));
      return;
    }
    fill(err);
    const now = Date.now();
    const totals = o.queue_totals || {};
    trackLevels(history, '', totals, LEVELS.map(([k]) => k), now);
    trackRates(history, '', o.message_stats, RATES.map(([k]) => k), now);
    const t = o.object_totals || {};
    const tile = (label, value, id) => h('div', { class: 'tile' }, h('div', { class: 'value', id }, typeof value === 'string' ? value : num(value)), h('div', { class: 'label' }, label));
    fill(
      tiles,
      tile('Connections', t.connections, 'total-connections'),
      tile('Channels', t.channels),
      tile('Exchanges', t.exchanges),
      tile('Queues', t.queues, 'total-queues'),
      tile('Consumers', t.consumers),
      tile('Ready', totals.messages_ready, 'total-ready'),
      tile('Unacked', totals.messages_unacknowledged),
      tile('Publish', rate(statRate(o.message_stats, 'publish'))),
    );
    fill(levels.lastChild, levelChart(history, '', totals, 'chart-levels'));
    fill(rates.lastChild, rateChart(history, '', o.message_stats, 'chart-rates'));
    fill(
      node,
      h('h2', null, 'Node'),
      facts([
        ['Node', o.node],
        ['Product', `${o.product_name || ''} ${o.product_version || ''}`],
        ['Management version', o.management_version],
        ['Rates mode', o.rates_mode],
      ]),
      h('h3', null, 'Listeners'),
      table(
        [
          { label: 'Protocol', cell: (l) => l.protocol },
          { label: 'Address', cell: (l) => l.ip_address },
          { label: 'Port', cell: (l) => l.port, num: true },
        ],
        o.listeners || [],
      ),
    );
    document.getElementById('product').textContent = `${o.product_name || ''} ${o.product_version || ''} on ${o.node || ''}`;
  }
  return { refresh };
}
