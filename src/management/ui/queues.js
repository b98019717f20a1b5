// Queues: the list (paged, filterable, sortable) with depth and rates, adding one, and one
// queue's page: its chart, consumers, bindings, publish, get, purge and delete.

import { get, put, post, del, path, query, selectedVhost, vhostNames, SAMPLES } from './api.js';
import { History, trackLevels, trackRates } from './chart.js';
import { h, fill, num, rate, bytes, statRate, table, errorBox, facts, form, input, select, textarea, parseArgs, plain, yesNo, act, notify } from './dom.js';
import { Lister } from './lister.js';
import { publishForm, bindForm, bindingsTable } from './exchanges.js';
import { levelChart, rateChart, RATES } from './overview.js';

export function queueHref(vhost, name) {
  return `#/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(name)}`;
}

function features(q) {
  const args = q.arguments || {};
  return [
    q.durable && h('span', { class: 'tag', title: 'durable' }, 'D'),
    q.auto_delete && h('span', { class: 'tag', title: 'auto-delete' }, 'AD'),
    q.exclusive && h('span', { class: 'tag', title: 'exclusive' }, 'Excl'),
    Object.keys(args)
      .filter((a) => a !== 'x-queue-type')
      .map((a) => h('span', { class: 'tag', title: `${a}: ${plain(args[a])}` }, a.replace(/^x-/, ''))),
    q.policy && h('span', { class: 'tag', title: 'policy' }, `policy ${q.policy}`),
  ];
}

const lister = new Lister('queues', 'queues');

export function mountList(main) {
  const vhost = selectedVhost();
  const addPanel = h('div', { class: 'panel' }, h('h2', null, 'Add a new queue'));
  fill(main, h('h1', null, 'Queues'), lister.element, addPanel);
  const columns = [
    !vhost && { label: 'Virtual host', cell: (q) => q.vhost, sort: 'vhost' },
    { label: 'Name', cell: (q) => h('a', { href: queueHref(q.vhost, q.name) }, q.name), sort: 'name', key: 'name' },
    { label: 'Type', cell: (q) => q.type, sort: 'type' },
    { label: 'Features', cell: features },
    { label: 'State', cell: (q) => q.state, sort: 'state' },
    { label: 'Ready', cell: (q) => num(q.messages_ready), num: true, sort: 'messages_ready', key: 'ready' },
    { label: 'Unacked', cell: (q) => num(q.messages_unacknowledged), num: true, sort: 'messages_unacknowledged', key: 'unacked' },
    { label: 'Total', cell: (q) => num(q.messages), num: true, sort: 'messages', key: 'total' },
    { label: 'Consumers', cell: (q) => num(q.consumers), num: true, sort: 'consumers' },
    { label: 'Incoming', cell: (q) => rate(statRate(q.message_stats, 'publish')), num: true, sort: 'message_stats.publish_details.rate' },
    { label: 'Deliver / get', cell: (q) => rate(statRate(q.message_stats, 'deliver_get')), num: true, sort: 'message_stats.deliver_get_details.rate' },
    { label: 'Ack', cell: (q) => rate(statRate(q.message_stats, 'ack')), num: true, sort: 'message_stats.ack_details.rate' },
  ].filter(Boolean);
  vhostNames().then(
    (names) => addPanel.append(addQueueForm(names, vhost, () => lister.refresh())),
    (e) => addPanel.append(errorBox(e)),
  );
  return { refresh: () => lister.refresh(columns) };
}

function addQueueForm(vhosts, vhost, done) {
  const v = select('vhost', vhosts, { id: 'q-vhost', value: vhost || '/' });
  const type = select('type', ['classic', 'quorum', 'stream'], { id: 'q-type' });
  const name = input('name', { id: 'q-name', required: true });
  const durable = select('durable', [['true', 'Durable'], ['false', 'Transient']], { id: 'q-durable' });
  const autoDelete = select('auto_delete', [['false', 'No'], ['true', 'Yes']], { id: 'q-auto-delete' });
  const args = textarea('arguments', { id: 'q-args', placeholder: 'x-max-length = 1000\nx-message-ttl = 60000' });
  return form(
    [
      ['Virtual host', v],
      ['Type', type],
      ['Name', name],
      ['Durability', durable],
      ['Auto delete', autoDelete],
      ['Arguments', args],
    ],
    'Add queue',
    async () => {
      const a = parseArgs(args.value);
      if (type.value !== 'classic') a['x-queue-type'] = type.value;
      await put(path('queues', v.value, name.value), { durable: durable.value === 'true', auto_delete: autoDelete.value === 'true', arguments: a });
      notify(`Queue ${name.value} declared.`);
      name.value = '';
      done();
    },
    { id: 'add-queue' },
  );
}

// Per-queue history, kept across visits.
const history = new History();

const ACK_MODES = [
  ['ack_requeue_true', 'Nack message, requeue'],
  ['reject_requeue_true', 'Reject, requeue'],
  ['ack_requeue_false', 'Automatic ack'],
  ['reject_requeue_false', 'Reject, do not requeue'],
];

function getForm(vhost, name, results, changed) {
  const mode = select('ackmode', ACK_MODES, { id: 'get-ackmode' });
  const encoding = select('encoding', [['auto', 'Automatic string/base64'], ['base64', 'Base64']], { id: 'get-encoding' });
  const count = input('count', { id: 'get-count', type: 'number', min: 1, value: '1' });
  const truncate = input('truncate', { id: 'get-truncate', type: 'number', min: 1, placeholder: 'bytes (optional)' });
  return form(
    [
      ['Ack mode', mode],
      ['Encoding', encoding],
      ['Messages', count],
      ['Truncate', truncate],
    ],
    'Get message(s)',
    async () => {
      const body = { count: Number(count.value) || 1, ackmode: mode.value, encoding: encoding.value };
      if (truncate.value) body.truncate = Number(truncate.value);
      const msgs = await post(path('queues', vhost, name, 'get'), body);
      fill(
        results,
        msgs.length
          ? msgs.map((m, i) =>
              h(
                'div',
                { class: 'message', dataset: { index: i } },
                h('h3', null, `Message ${i + 1}`),
                facts([
                  ['Exchange', m.exchange === '' ? '(AMQP default)' : m.exchange],
                  ['Routing key', m.routing_key],
                  ['Redelivered', yesNo(m.redelivered)],
                  ['Left in queue', num(m.message_count)],
                  ['Properties', h('pre', null, JSON.stringify(m.properties || {}, null, 2))],
                  [`Payload (${num(m.payload_bytes)} bytes, ${m.payload_encoding})`, h('pre', { class: 'payload' }, m.payload)],
                ]),
              ),
            )
          : h('p', { class: 'muted', id: 'get-empty' }, 'Queue is empty.'),
      );
      changed();
    },
    { id: 'get-form' },
  );
}

export function mountOne(main, [vhost, name]) {
  const key = `${vhost}\u0000${name}:`;
  const err = h('div');
  const tiles = h('div', { class: 'tiles', id: 'queue-tiles' });
  const info = h('div', { class: 'panel' });
  const levels = h('div', { class: 'panel' }, h('h2', null, 'Queued messages'), h('div'));
  const rates = h('div', { class: 'panel' }, h('h2', null, 'Message rates'), h('div'));
  const consumers = h('div', { class: 'panel' }, h('h2', null, 'Consumers'), h('div'));
  const bindings = h('div', { class: 'panel' }, h('h2', null, 'Bindings'), h('div'));
  const results = h('div', { id: 'get-results' });
  const refreshNow = () => refresh();
  const purge = h('button', {
    type: 'button',
    class: 'danger',
    id: 'purge-queue',
    onclick: () => {
      if (!confirm(`Purge all ready messages of ${name}?`)) return;
      act(purge, () => del(path('queues', vhost, name, 'contents')), 'Queue purged.').then(refreshNow);
    },
  }, 'Purge messages');
  const ifEmpty = h('input', { type: 'checkbox', id: 'delete-if-empty' });
  const ifUnused = h('input', { type: 'checkbox', id: 'delete-if-unused' });
  const remove = h('button', {
    type: 'button',
    class: 'danger',
    id: 'delete-queue',
    onclick: () => {
      if (!confirm(`Delete queue ${name}?`)) return;
      const q = query({ 'if-empty': ifEmpty.checked ? 'true' : '', 'if-unused': ifUnused.checked ? 'true' : '' });
      act(remove, () => del(path('queues', vhost, name) + q), 'Queue deleted.').then((r) => r !== undefined && (location.hash = '#/queues'));
    },
  }, 'Delete queue');
  fill(
    main,
    h('div', { class: 'crumbs' }, h('a', { href: '#/queues' }, 'Queues'), ` › ${vhost}`),
    h('h1', null, `Queue ${name}`),
    err,
    tiles,
    h('div', { class: 'grid2' }, levels, info),
    h('br'),
    rates,
    consumers,
    bindings,
    h('div', { class: 'panel' }, h('h2', null, 'Add binding to this queue'), bindForm(vhost, { type: 'queue', name }, refreshNow)),
    h('div', { class: 'grid2' },
      h('div', { class: 'panel' }, h('h2', null, 'Publish message'), h('p', { class: 'muted' }, 'Published through the default exchange with the queue name as routing key.'), publishForm(vhost, '', name, refreshNow)),
      h('div', { class: 'panel' }, h('h2', null, 'Get messages'), h('p', { class: 'muted' }, 'Getting messages is destructive unless they are requeued.'), getForm(vhost, name, results, refreshNow), results),
    ),
    h('br'),
    h('div', { class: 'panel' }, h('h2', null, 'Purge and delete'),
      h('p', null, purge),
      h('p', { class: 'inline' }, h('label', { class: 'inline' }, ifEmpty, 'only if empty'), h('label', { class: 'inline' }, ifUnused, 'only if unused'), remove)),
  );

  let latest = 0; // an action's refresh may overtake the periodic one: show only the newest
  async function refresh() {
    const seq = ++latest;
    let q;
    let bs;
    try {
      [q, bs] = await Promise.all([get(path('queues', vhost, name) + query(SAMPLES)), get(path('bindings', vhost))]);
    } catch (e) {
      if (seq === latest) fill(err, errorBox(e.status === 404 ? `Queue ${name} does not exist in vhost ${vhost}.` : e));
      return;
    }
    if (seq !== latest) return;
    fill(err);
    const now = Date.now();
    trackLevels(history, key, q, ['messages_ready', 'messages_unacknowledged', 'messages'], now);
    trackRates(history, key, q.message_stats, RATES.map(([k]) => k), now);
    const tile = (label, value, id) => h('div', { class: 'tile' }, h('div', { class: 'value', id }, num(value)), h('div', { class: 'label' }, label));
    fill(
      tiles,
      tile('Ready', q.messages_ready, 'queue-ready'),
      tile('Unacked', q.messages_unacknowledged, 'queue-unacked'),
      tile('Total', q.messages, 'queue-total'),
      tile('Consumers', q.consumers, 'queue-consumers'),
    );
    fill(levels.lastChild, levelChart(history, key, q, 'queue-chart'));
    const hasRates = q.message_stats && RATES.some(([k]) => q.message_stats[`${k}_details`]);
    rates.hidden = !hasRates;
    if (hasRates) fill(rates.lastChild, rateChart(history, key, q.message_stats, 'queue-rates'));
    fill(
      info,
      h('h2', null, 'Details'),
      facts([
        ['Virtual host', q.vhost],
        ['Type', q.type],
        ['Features', features(q)],
        ['State', q.state],
        ['Arguments', plain(q.arguments)],
        ['Policy', q.policy || '–'],
        ['Operator policy', q.operator_policy || '–'],
        ['Effective policy', plain(q.effective_policy_definition) || '–'],
        ['Exclusive owner', q.owner_pid_details ? q.owner_pid_details.name : '–'],
        ['Message bytes', `${bytes(q.message_bytes)} (ready ${bytes(q.message_bytes_ready)}, unacked ${bytes(q.message_bytes_unacknowledged)})`],
        ['Consumer utilisation', q.consumer_utilisation === null || q.consumer_utilisation === undefined ? '–' : `${Math.round(q.consumer_utilisation * 100)}%`],
        ['Idle since', q.idle_since || '–'],
      ]),
    );
    fill(
      consumers.lastChild,
      table(
        [
          { label: 'Channel', cell: (c) => (c.channel_details ? `${c.channel_details.connection_name || ''} (${c.channel_details.number})` : '') },
          { label: 'Consumer tag', cell: (c) => c.consumer_tag },
          { label: 'Ack required', cell: (c) => yesNo(c.ack_required) },
          { label: 'Exclusive', cell: (c) => yesNo(c.exclusive) },
          { label: 'Prefetch', cell: (c) => num(c.prefetch_count), num: true },
          { label: 'Active', cell: (c) => yesNo(c.active) },
          { label: 'Arguments', cell: (c) => plain(c.arguments) },
        ],
        q.consumer_details || [],
        { empty: 'No consumers', id: 'consumers-table', rowKey: (c) => c.consumer_tag },
      ),
    );
    fill(
      bindings.lastChild,
      bindingsTable(vhost, bs.filter((b) => b.destination_type === 'queue' && b.destination === name), { showDestination: false, changed: refreshNow }),
    );
  }
  return { refresh };
}
