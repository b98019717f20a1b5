// Exchanges: the list (paged, filterable, sortable), one exchange with its bindings and a
// publish form, and adding one. Also the publish and binding forms the queue page reuses.

import { get, put, post, del, path, selectedVhost, vhostNames } from './api.js';
import { h, fill, rate, statRate, table, errorBox, facts, form, input, select, textarea, parseArgs, plain, yesNo, act, notify, num } from './dom.js';
import { Lister } from './lister.js';

// The API's name of an exchange in paths: the default exchange is "amq.default".
export const apiName = (x) => x || 'amq.default';
export const shownName = (x) => x || '(AMQP default)';

export function exchangeLink(vhost, name) {
  return h('a', { href: `#/exchanges/${encodeURIComponent(vhost)}/${encodeURIComponent(apiName(name))}` }, shownName(name));
}

// A publish form for `exchange` in `vhost`; `fixedKey` (the queue page) pins the routing key.
export function publishForm(vhost, exchange, fixedKey, done) {
  const key = input('routing_key', { id: 'pub-key', value: fixedKey ?? '', disabled: fixedKey !== undefined });
  const mode = select('delivery_mode', [['1', '1 - Non-persistent'], ['2', '2 - Persistent']], { id: 'pub-mode', value: '2' });
  const headers = textarea('headers', { id: 'pub-headers', placeholder: 'key = value, one a line' });
  const props = textarea('properties', { id: 'pub-props', placeholder: 'content_type = text/plain\ncorrelation_id = 42' });
  const payload = textarea('payload', { id: 'pub-payload', placeholder: 'message body' });
  const encoding = select('payload_encoding', [['string', 'String'], ['base64', 'Base64']], { id: 'pub-encoding' });
  return form(
    [
      ['Routing key', key],
      ['Delivery mode', mode],
      ['Headers', headers],
      ['Properties', props],
      ['Payload encoding', encoding],
      ['Payload', payload],
    ],
    'Publish message',
    async () => {
      const properties = { ...parseArgs(props.value), delivery_mode: Number(mode.value) };
      const hs = parseArgs(headers.value);
      if (Object.keys(hs).length) properties.headers = hs;
      const r = await post(path('exchanges', vhost, apiName(exchange), 'publish'), {
        routing_key: key.value,
        payload: payload.value,
        payload_encoding: encoding.value,
        properties,
      });
      notify(r && r.routed === false ? 'Message published, but not routed to any queue.' : 'Message published.', r && r.routed === false);
      if (done) done();
    },
    { id: 'publish-form' },
  );
}

// RabbitMQ's binding paths: /api/bindings/{vhost}/e/{source}/{q|e}/{destination}[/{props}].
function bindingPath(vhost, b) {
  const kind = b.destination_type === 'exchange' ? 'e' : 'q';
  return path('bindings', vhost, 'e', b.source, kind, b.destination);
}

// The bindings table (`rows` from /api/bindings/{vhost}) with unbind buttons.
export function bindingsTable(vhost, rows, { showSource = true, showDestination = true, changed } = {}) {
  const unbind = (b) =>
    b.source === ''
      ? h('span', { class: 'muted' }, 'default')
      : h('button', {
          class: 'small danger',
          type: 'button',
          onclick: (e) =>
            act(e.target, async () => {
              await del(bindingPath(vhost, b) + '/' + encodeURIComponent(b.properties_key));
              changed && changed();
            }, 'Binding removed.'),
        }, 'Unbind');
  return table(
    [
      showSource && { label: 'From', cell: (b) => (b.source === '' ? '(Default exchange binding)' : exchangeLink(vhost, b.source)) },
      showDestination && { label: 'To', cell: (b) => `${b.destination_type === 'exchange' ? 'exchange' : 'queue'} ${b.destination}` },
      { label: 'Routing key', cell: (b) => h('code', null, b.routing_key) },
      { label: 'Arguments', cell: (b) => plain(Object.keys(b.arguments || {}).length ? b.arguments : '') },
      { label: '', cell: unbind },
    ].filter(Boolean),
    rows,
    { empty: 'No bindings' },
  );
}

// Bind `fixed` (a queue or exchange of this page) to or from another exchange.
export function bindForm(vhost, fixed, changed) {
  const other = input('other', { id: 'bind-other', required: true });
  const kind = select('kind', [['q', 'To queue'], ['e', 'To exchange']], { id: 'bind-kind' });
  const key = input('routing_key', { id: 'bind-key' });
  const args = textarea('arguments', { id: 'bind-args', placeholder: 'key = value, one a line' });
  const fields = fixed.type === 'queue' ? [['From exchange', other]] : [['Destination', h('span', { class: 'inline' }, kind, other)]];
  return form(
    [...fields, ['Routing key', key], ['Arguments', args]],
    'Bind',
    async () => {
      const body = { routing_key: key.value, arguments: parseArgs(args.value) };
      const url =
        fixed.type === 'queue'
          ? path('bindings', vhost, 'e', other.value, 'q', fixed.name)
          : path('bindings', vhost, 'e', fixed.name, kind.value, other.value);
      await post(url, body);
      notify('Binding added.');
      changed && changed();
    },
    { id: 'bind-form' },
  );
}

function features(x) {
  return [
    x.durable && h('span', { class: 'tag', title: 'durable' }, 'D'),
    x.auto_delete && h('span', { class: 'tag', title: 'auto-delete' }, 'AD'),
    x.internal && h('span', { class: 'tag', title: 'internal' }, 'I'),
    Object.keys(x.arguments || {}).map((a) => h('span', { class: 'tag', title: plain(x.arguments[a]) }, a)),
  ];
}

const lister = new Lister('exchanges', 'exchanges');

export function mountList(main) {
  const vhost = selectedVhost();
  const addPanel = h('div', { class: 'panel' }, h('h2', null, 'Add a new exchange'));
  fill(main, h('h1', null, 'Exchanges'), lister.element, addPanel);
  const columns = () => [
    !vhost && { label: 'Virtual host', cell: (x) => x.vhost, sort: 'vhost' },
    { label: 'Name', cell: (x) => exchangeLink(x.vhost, x.name), sort: 'name', key: 'name' },
    { label: 'Type', cell: (x) => x.type, sort: 'type' },
    { label: 'Features', cell: features },
    { label: 'Message rate in', cell: (x) => rate(statRate(x.message_stats, 'publish_in')), num: true, sort: 'message_stats.publish_in_details.rate' },
    { label: 'Message rate out', cell: (x) => rate(statRate(x.message_stats, 'publish_out')), num: true, sort: 'message_stats.publish_out_details.rate' },
  ].filter(Boolean);
  vhostNames().then((names) => addPanel.append(addExchangeForm(names, vhost, () => lister.refresh(columns()))), (e) => addPanel.append(errorBox(e)));
  return { refresh: () => lister.refresh(columns()) };
}

function addExchangeForm(vhosts, vhost, done) {
  const v = select('vhost', vhosts, { id: 'x-vhost', value: vhost || '/' });
  const name = input('name', { id: 'x-name', required: true });
  const type = select('type', ['direct', 'fanout', 'topic', 'headers', 'x-delayed-message', 'x-message-deduplication'], { id: 'x-type' });
  const durable = select('durable', [['true', 'Durable'], ['false', 'Transient']], { id: 'x-durable' });
  const autoDelete = select('auto_delete', [['false', 'No'], ['true', 'Yes']], { id: 'x-auto-delete' });
  const internal = select('internal', [['false', 'No'], ['true', 'Yes']], { id: 'x-internal' });
  const args = textarea('arguments', { id: 'x-args', placeholder: 'alternate-exchange = my-ae' });
  return form(
    [
      ['Virtual host', v],
      ['Name', name],
      ['Type', type],
      ['Durability', durable],
      ['Auto delete', autoDelete],
      ['Internal', internal],
      ['Arguments', args],
    ],
    'Add exchange',
    async () => {
      await put(path('exchanges', v.value, name.value), {
        type: type.value,
        durable: durable.value === 'true',
        auto_delete: autoDelete.value === 'true',
        internal: internal.value === 'true',
        arguments: parseArgs(args.value),
      });
      notify(`Exchange ${name.value} declared.`);
      name.value = '';
      done();
    },
    { id: 'add-exchange' },
  );
}

export function mountOne(main, [vhost, name]) {
  const real = name === 'amq.default' ? '' : name;
  const err = h('div');
  const info = h('div', { class: 'panel' });
  const out = h('div', { class: 'panel' }, h('h2', null, 'Bindings from this exchange'), h('div'));
  const into = h('div', { class: 'panel' }, h('h2', null, 'Bindings to this exchange'), h('div'));
  const refreshNow = () => refresh();
  const panels = [
    h('div', { class: 'panel' }, h('h2', null, 'Publish message'), publishForm(vhost, real, undefined, refreshNow)),
  ];
  if (real) panels.unshift(h('div', { class: 'panel' }, h('h2', null, 'Add binding from this exchange'), bindForm(vhost, { type: 'exchange', name: real }, refreshNow)));
  const deleteButton = h('button', {
    type: 'button',
    class: 'danger',
    id: 'delete-exchange',
    disabled: !real || real.startsWith('amq.'),
    onclick: (e) => {
      if (!confirm(`Delete exchange ${real}?`)) return;
      act(e.target, () => del(path('exchanges', vhost, real)), 'Exchange deleted.').then((r) => r !== undefined && (location.hash = '#/exchanges'));
    },
  }, 'Delete this exchange');
  fill(
    main,
    h('div', { class: 'crumbs' }, h('a', { href: '#/exchanges' }, 'Exchanges'), ` › ${vhost}`),
    h('h1', null, `Exchange ${shownName(real)}`),
    err,
    info,
    real ? out : null,
    into,
    panels,
    h('div', { class: 'panel' }, h('h2', null, 'Delete'), deleteButton),
  );

  async function refresh() {
    try {
      const [x, bindings] = await Promise.all([
        real ? get(path('exchanges', vhost, real)) : Promise.resolve({ name: '', vhost, type: 'direct', durable: true }),
        get(path('bindings', vhost)),
      ]);
      fill(err);
      fill(
        info,
        h('h2', null, 'Details'),
        facts([
          ['Virtual host', x.vhost],
          ['Type', x.type],
          ['Durable', yesNo(x.durable)],
          ['Auto delete', yesNo(x.auto_delete)],
          ['Internal', yesNo(x.internal)],
          ['Arguments', plain(x.arguments)],
          ['Rate in', rate(statRate(x.message_stats, 'publish_in'))],
          ['Rate out', rate(statRate(x.message_stats, 'publish_out'))],
          ['Bindings', num(bindings.filter((b) => b.source === real).length)],
        ]),
      );
      fill(out.lastChild, bindingsTable(vhost, bindings.filter((b) => b.source === real), { showSource: false, changed: refreshNow }));
      fill(
        into.lastChild,
        bindingsTable(vhost, bindings.filter((b) => b.destination_type === 'exchange' && b.destination === real), { showDestination: false, changed: refreshNow }),
      );
    } catch (e) {
      fill(err, errorBox(e));
    }
  }
  return { refresh };
}
