// Connections (list, one with its channels and a close form) and channels.

import { get, del, path, selectedVhost } from './api.js';
import { h, fill, num, when, table, errorBox, facts, form, input, plain, yesNo, notify } from './dom.js';

export function connectionHref(name) {
  return `#/connections/${encodeURIComponent(name)}`;
}

// The client's product and version from its client-properties, as a short label.
function client(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(' ') || p.platform || '';
}

// The vhost filter applies to lists the API does not scope by vhost.
function inVhost(list) {
  const v = selectedVhost();
  return v ? list.filter((x) => x.vhost === v) : list;
}

function channelTable(rows, id) {
  return table(
    [
      { label: 'Channel', cell: (c) => (c.connection_details ? h('a', { href: connectionHref(c.connection_details.name) }, c.name) : c.name) },
      { label: 'User', cell: (c) => c.user },
      { label: 'Virtual host', cell: (c) => c.vhost },
      { label: 'Mode', cell: (c) => [c.confirm && h('span', { class: 'tag', title: 'confirm' }, 'C'), c.transactional && h('span', { class: 'tag', title: 'transactional' }, 'T')] },
      { label: 'State', cell: (c) => c.state },
      { label: 'Prefetch', cell: (c) => (c.global_prefetch_count ? `${c.prefetch_count} / global ${c.global_prefetch_count}` : num(c.prefetch_count)), num: true },
      { label: 'Unacked', cell: (c) => num(c.messages_unacknowledged), num: true },
      { label: 'Unconfirmed', cell: (c) => num(c.messages_unconfirmed), num: true },
      { label: 'Consumers', cell: (c) => num(c.consumer_count), num: true },
    ],
    rows,
    { empty: 'No channels', id, rowKey: (c) => c.name },
  );
}

export function mountList(main) {
  const body = h('div', { class: 'panel' });
  fill(main, h('h1', null, 'Connections'), body);
  async function refresh() {
    try {
      const list = inVhost(await get('/api/connections'));
      fill(
        body,
        table(
          [
            {
              label: 'Name',
              key: 'name',
              cell: (c) => {
                const given = (c.client_properties || {}).connection_name;
                return [h('a', { href: connectionHref(c.name) }, c.name), given && h('div', { class: 'muted' }, given)];
              },
            },
            { label: 'User', cell: (c) => c.user },
            { label: 'Virtual host', cell: (c) => c.vhost },
            { label: 'Client', cell: client },
            { label: 'Protocol', cell: (c) => c.protocol },
            { label: 'TLS', cell: (c) => yesNo(c.ssl) },
            { label: 'State', cell: (c) => c.state },
            { label: 'Channels', cell: (c) => num(c.channels), num: true },
            { label: 'Connected', cell: (c) => when(c.connected_at) },
          ],
          list,
          { empty: 'No connections', id: 'connections-table', rowKey: (c) => c.name },
        ),
      );
    } catch (e) {
      fill(body, errorBox(e));
    }
  }
  return { refresh };
}

export function mountOne(main, [name]) {
  const err = h('div');
  const info = h('div', { class: 'panel' });
  const props = h('div', { class: 'panel' });
  const channels = h('div', { class: 'panel' }, h('h2', null, 'Channels'), h('div'));
  const reason = input('reason', { id: 'close-reason', value: 'Closed via management plugin' });
  const closeForm = form([['Reason', reason]], 'Force close', async () => {
    if (!confirm(`Close connection ${name}?`)) return;
    await del(path('connections', name), { 'X-Reason': reason.value });
    notify('Connection closed.');
    location.hash = '#/connections';
  }, { id: 'close-connection' });
  fill(
    main,
    h('div', { class: 'crumbs' }, h('a', { href: '#/connections' }, 'Connections')),
    h('h1', null, `Connection ${name}`),
    err,
    h('div', { class: 'grid2' }, info, props),
    h('br'),
    channels,
    h('div', { class: 'panel' }, h('h2', null, 'Close this connection'), closeForm),
  );
  async function refresh() {
    try {
      const [c, chs] = await Promise.all([get(path('connections', name)), get(path('connections', name, 'channels'))]);
      fill(err);
      fill(
        info,
        h('h2', null, 'Details'),
        facts([
          ['User', c.user],
          ['Virtual host', c.vhost],
          ['State', c.state],
          ['Protocol', c.protocol],
          ['Authentication', c.auth_mechanism],
          ['TLS', yesNo(c.ssl)],
          ['Peer', `${c.peer_host}:${c.peer_port}`],
          ['Local', `${c.host}:${c.port}`],
          ['Channels', `${num(c.channels)} (max ${num(c.channel_max)})`],
          ['Frame max', num(c.frame_max)],
          ['Heartbeat', `${num(c.timeout)} s`],
          ['Connected', when(c.connected_at)],
          c.recv_oct !== undefined && ['Received', num(c.recv_oct)],
          c.send_oct !== undefined && ['Sent', num(c.send_oct)],
        ]),
      );
      const cp = c.client_properties || {};
      fill(
        props,
        h('h2', null, 'Client properties'),
        facts(Object.keys(cp).sort().map((k) => [k, typeof cp[k] === 'object' ? h('pre', null, JSON.stringify(cp[k], null, 2)) : plain(cp[k])])),
      );
      fill(channels.lastChild, channelTable(chs, 'connection-channels'));
    } catch (e) {
      fill(err, errorBox(e.status === 404 ? `Connection ${name} is closed.` : e));
    }
  }
  return { refresh };
}

export function mountChannels(main) {
  const body = h('div', { class: 'panel' });
  fill(main, h('h1', null, 'Channels'), body);
  async function refresh() {
    try {
      fill(body, channelTable(inVhost(await get('/api/channels')), 'channels-table'));
    } catch (e) {
      fill(body, errorBox(e));
    }
  }
  return { refresh };
}
