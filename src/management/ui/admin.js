// Admin: users, permissions, virtual hosts, policies, and definitions download/upload.

import { get, put, post, del, path, selectedVhost, vhostNames } from './api.js';
import { h, fill, table, errorBox, form, input, select, textarea, tags, plain, act, notify } from './dom.js';

const TABS = [
  ['users', 'Users'],
  ['vhosts', 'Virtual hosts'],
  ['policies', 'Policies'],
  ['definitions', 'Definitions'],
];

const MOUNT = { users: mountUsers, vhosts: mountVhosts, policies: mountPolicies, definitions: mountDefinitions };

export function mount(main, [tab = 'users'], ctx) {
  const content = h('div');
  fill(
    main,
    h('h1', null, 'Admin'),
    h('nav', { class: 'tabs' }, TABS.map(([t, label]) => h('a', { href: `#/admin/${t}`, class: t === tab ? 'active' : null }, label))),
    content,
  );
  return (MOUNT[tab] || mountUsers)(content, ctx);
}

function deleteButton(label, what, url, changed) {
  return h('button', {
    type: 'button',
    class: 'small danger',
    onclick: (e) => {
      if (!confirm(`Delete ${what}?`)) return;
      act(e.target, () => del(url), `Deleted ${what}.`).then(changed);
    },
  }, label);
}

// ---- users and permissions --------------------------------------------------------------------

const TAG_CHOICES = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

function mountUsers(content) {
  let known = []; // the users of the last refresh (an edit without a password keeps the hash)
  const users = h('div', { class: 'panel' }, h('h2', null, 'Users'), h('div'));
  const perms = h('div', { class: 'panel' }, h('h2', null, 'Permissions'), h('div'));
  const name = input('name', { id: 'user-name', required: true, autocomplete: 'off' });
  const password = input('password', { id: 'user-password', type: 'password', autocomplete: 'new-password' });
  const tagsInput = input('tags', { id: 'user-tags', placeholder: 'comma-separated' });
  const picks = h(
    'span',
    { class: 'inline' },
    TAG_CHOICES.map((t) =>
      h('button', {
        type: 'button',
        class: 'small',
        dataset: { tag: t },
        onclick: () => {
          const now = tagsInput.value.split(',').map((x) => x.trim()).filter(Boolean);
          if (!now.includes(t)) tagsInput.value = [...now, t].join(', ');
        },
      }, t),
    ),
  );
  const userForm = form(
    [
      ['Username', name],
      ['Password', password],
      ['Tags', tagsInput],
      ['', picks],
    ],
    'Add / update user',
    async () => {
      const body = { tags: tagsInput.value };
      const existing = known.find((u) => u.name === name.value);
      if (password.value) body.password = password.value;
      else if (existing) Object.assign(body, { password_hash: existing.password_hash, hashing_algorithm: existing.hashing_algorithm });
      else body.password_hash = '';
      await put(path('users', name.value), body);
      notify(`User ${name.value} saved.`);
      name.value = password.value = tagsInput.value = '';
      refresh();
    },
    { id: 'user-form' },
  );
  const pUser = select('user', [], { id: 'perm-user' });
  const pVhost = select('vhost', [], { id: 'perm-vhost' });
  const conf = input('configure', { id: 'perm-configure', value: '.*' });
  const write = input('write', { id: 'perm-write', value: '.*' });
  const read = input('read', { id: 'perm-read', value: '.*' });
  const permForm = form(
    [
      ['User', pUser],
      ['Virtual host', pVhost],
      ['Configure regexp', conf],
      ['Write regexp', write],
      ['Read regexp', read],
    ],
    'Set permission',
    async () => {
      await put(path('permissions', pVhost.value, pUser.value), { configure: conf.value, write: write.value, read: read.value });
      notify(`Permission of ${pUser.value} on ${pVhost.value} set.`);
      refresh();
    },
    { id: 'permission-form' },
  );
  fill(
    content,
    users,
    h('div', { class: 'panel' }, h('h2', null, 'Add or update a user'), h('p', { class: 'muted' }, 'An empty password keeps an existing user\'s password; a new user without one cannot log in with a password.'), userForm),
    perms,
    h('div', { class: 'panel' }, h('h2', null, 'Set permission'), permForm),
  );

  const options = (sel, names) => {
    const keep = sel.value;
    fill(sel, names.map((n) => h('option', { value: n }, n)));
    if (names.includes(keep)) sel.value = keep;
  };

  async function refresh() {
    try {
      const [us, ps, vs] = await Promise.all([get('/api/users'), get('/api/permissions'), vhostNames()]);
      known = us;
      options(pUser, us.map((u) => u.name));
      options(pVhost, vs);
      fill(
        users.lastChild,
        table(
          [
            { label: 'Name', cell: (u) => u.name, key: 'name' },
            { label: 'Tags', cell: (u) => tags(u.tags) },
            { label: 'Password', cell: (u) => (u.password_hash ? 'set' : 'none') },
            { label: 'Limits', cell: (u) => plain(Object.keys(u.limits || {}).length ? u.limits : '') },
            {
              label: '',
              cell: (u) => [
                h('button', {
                  type: 'button',
                  class: 'small',
                  onclick: () => {
                    name.value = u.name;
                    tagsInput.value = (Array.isArray(u.tags) ? u.tags : String(u.tags || '').split(',')).join(', ');
                    password.focus();
                  },
                }, 'Edit'),
                ' ',
                deleteButton('Delete', `user ${u.name}`, path('users', u.name), refresh),
              ],
            },
          ],
          us,
          { id: 'users-table', rowKey: (u) => u.name, empty: 'No users' },
        ),
      );
      const v = selectedVhost();
      fill(
        perms.lastChild,
        table(
          [
            { label: 'User', cell: (p) => p.user },
            { label: 'Virtual host', cell: (p) => p.vhost },
            { label: 'Configure', cell: (p) => h('code', null, p.configure) },
            { label: 'Write', cell: (p) => h('code', null, p.write) },
            { label: 'Read', cell: (p) => h('code', null, p.read) },
            { label: '', cell: (p) => deleteButton('Clear', `the permission of ${p.user} on ${p.vhost}`, path('permissions', p.vhost, p.user), refresh) },
          ],
          ps.filter((p) => !v || p.vhost === v),
          { id: 'permissions-table', rowKey: (p) => `${p.vhost} ${p.user}`, empty: 'No permissions' },
        ),
      );
    } catch (e) {
      fill(users.lastChild, errorBox(e));
    }
  }
  return { refresh };
}

// ---- virtual hosts ----------------------------------------------------------------------------

function mountVhosts(content, ctx) {
  const list = h('div', { class: 'panel' }, h('h2', null, 'Virtual hosts'), h('div'));
  const name = input('name', { id: 'vhost-name', required: true });
  const description = input('description', { id: 'vhost-description' });
  const vtags = input('tags', { id: 'vhost-tags', placeholder: 'comma-separated' });
  const dqt = select('default_queue_type', [['undefined', '(none)'], 'classic', 'quorum'], { id: 'vhost-dqt' });
  const vform = form(
    [
      ['Name', name],
      ['Description', description],
      ['Tags', vtags],
      ['Default queue type', dqt],
    ],
    'Add / update virtual host',
    async () => {
      await put(path('vhosts', name.value), { description: description.value, tags: vtags.value, default_queue_type: dqt.value });
      notify(`Virtual host ${name.value} saved.`);
      name.value = description.value = vtags.value = '';
      ctx.vhostsChanged();
      refresh();
    },
    { id: 'vhost-form' },
  );
  fill(content, list, h('div', { class: 'panel' }, h('h2', null, 'Add or update a virtual host'), vform));
  async function refresh() {
    try {
      const vs = await get('/api/vhosts');
      fill(
        list.lastChild,
        table(
          [
            { label: 'Name', cell: (v) => v.name, key: 'name' },
            { label: 'Description', cell: (v) => v.description || '' },
            { label: 'Tags', cell: (v) => tags(v.tags) },
            { label: 'Default queue type', cell: (v) => v.default_queue_type || '' },
            { label: 'Messages', cell: (v) => (v.messages === undefined ? '–' : String(v.messages)), num: true },
            {
              label: '',
              cell: (v) => [
                h('button', {
                  type: 'button',
                  class: 'small',
                  onclick: () => {
                    name.value = v.name;
                    description.value = v.description || '';
                    vtags.value = (v.tags || []).join(', ');
                    dqt.value = v.default_queue_type || 'undefined';
                  },
                }, 'Edit'),
                ' ',
                deleteButton('Delete', `virtual host ${v.name}`, path('vhosts', v.name), () => {
                  ctx.vhostsChanged();
                  refresh();
                }),
              ],
            },
          ],
          vs,
          { id: 'vhosts-table', rowKey: (v) => v.name },
        ),
      );
    } catch (e) {
      fill(list.lastChild, errorBox(e));
    }
  }
  return { refresh };
}

// ---- policies ---------------------------------------------------------------------------------

const APPLY_TO = ['all', 'queues', 'exchanges', 'classic_queues', 'quorum_queues', 'streams'];

function mountPolicies(content) {
  const lists = h('div');
  const kind = select('kind', [['policies', 'Policy'], ['operator-policies', 'Operator policy']], { id: 'policy-kind' });
  const vhost = select('vhost', [], { id: 'policy-vhost' });
  const name = input('name', { id: 'policy-name', required: true });
  const pattern = input('pattern', { id: 'policy-pattern', required: true, placeholder: '^orders\\.' });
  const applyTo = select('apply-to', APPLY_TO, { id: 'policy-apply-to' });
  const priority = input('priority', { id: 'policy-priority', type: 'number', value: '0' });
  const definition = textarea('definition', { id: 'policy-definition', placeholder: '{"max-length": 1000}' });
  const pform = form(
    [
      ['Kind', kind],
      ['Virtual host', vhost],
      ['Name', name],
      ['Pattern', pattern],
      ['Apply to', applyTo],
      ['Priority', priority],
      ['Definition (JSON)', definition],
    ],
    'Add / update policy',
    async () => {
      let def;
      try {
        def = JSON.parse(definition.value || '{}');
      } catch (e) {
        throw new Error(`The definition is not JSON: ${e.message}`);
      }
      await put(path(kind.value, vhost.value, name.value), { pattern: pattern.value, 'apply-to': applyTo.value, priority: Number(priority.value) || 0, definition: def });
      notify(`Policy ${name.value} saved.`);
      refresh();
    },
    { id: 'policy-form' },
  );
  fill(content, lists, h('div', { class: 'panel' }, h('h2', null, 'Add or update a policy'), pform));

  const edit = (k, p) => {
    kind.value = k;
    vhost.value = p.vhost;
    name.value = p.name;
    pattern.value = p.pattern;
    applyTo.value = p['apply-to'];
    priority.value = String(p.priority);
    definition.value = JSON.stringify(p.definition, null, 2);
    name.focus();
  };
  const policyTable = (k, list, id) =>
    table(
      [
        { label: 'Virtual host', cell: (p) => p.vhost },
        { label: 'Name', cell: (p) => p.name, key: 'name' },
        { label: 'Pattern', cell: (p) => h('code', null, p.pattern) },
        { label: 'Apply to', cell: (p) => p['apply-to'] },
        { label: 'Definition', cell: (p) => h('code', null, plain(p.definition)) },
        { label: 'Priority', cell: (p) => String(p.priority), num: true },
        {
          label: '',
          cell: (p) => [
            h('button', { type: 'button', class: 'small', onclick: () => edit(k, p) }, 'Edit'),
            ' ',
            deleteButton('Delete', `policy ${p.name}`, path(k, p.vhost, p.name), refresh),
          ],
        },
      ],
      list,
      { id, rowKey: (p) => p.name, empty: 'No policies' },
    );

  async function refresh() {
    const v = selectedVhost();
    try {
      const [ps, ops, vs] = await Promise.all([
        get(v ? path('policies', v) : '/api/policies'),
        get('/api/operator-policies').catch(() => []),
        vhostNames(),
      ]);
      const keep = vhost.value || v || '/';
      fill(vhost, vs.map((n) => h('option', { value: n }, n)));
      vhost.value = vs.includes(keep) ? keep : vs[0];
      fill(
        lists,
        h('div', { class: 'panel' }, h('h2', null, 'Policies'), policyTable('policies', ps, 'policies-table')),
        h('div', { class: 'panel' }, h('h2', null, 'Operator policies'), policyTable('operator-policies', ops.filter((p) => !v || p.vhost === v), 'operator-policies-table')),
      );
    } catch (e) {
      fill(lists, errorBox(e));
    }
  }
  return { refresh };
}

// ---- definitions ------------------------------------------------------------------------------

function mountDefinitions(content, ctx) {
  const status = h('p', { id: 'definitions-status', class: 'muted' });
  const download = h('button', {
    type: 'button',
    class: 'primary',
    id: 'download-definitions',
    onclick: () =>
      act(download, async () => {
        const defs = await get('/api/definitions');
        const text = JSON.stringify(defs, null, 2);
        const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
        const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');
        const a = h('a', { href: url, download: `warren-definitions-${stamp}.json` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
        const count = (k) => (Array.isArray(defs[k]) ? defs[k].length : 0);
        status.textContent = `Downloaded ${count('queues')} queues, ${count('exchanges')} exchanges, ${count('bindings')} bindings, ${count('users')} users, ${count('vhosts')} virtual hosts, ${count('policies')} policies.`;
      }),
  }, 'Download broker definitions');
  const file = h('input', { type: 'file', id: 'definitions-file', accept: 'application/json,.json' });
  const upload = form([['Definitions file', file]], 'Upload definitions', async () => {
    const f = file.files[0];
    if (!f) throw new Error('Choose a definitions file first.');
    const text = await f.text();
    try {
      JSON.parse(text);
    } catch (e) {
      throw new Error(`${f.name} is not JSON: ${e.message}`);
    }
    await post('/api/definitions', text);
    status.textContent = `Imported ${f.name}.`;
    notify(`Definitions from ${f.name} imported.`);
    ctx.vhostsChanged();
  }, { id: 'upload-definitions' });
  fill(
    content,
    h('div', { class: 'panel' },
      h('h2', null, 'Export'),
      h('p', { class: 'muted' }, "Users, virtual hosts, permissions, policies, durable queues, exchanges and bindings in RabbitMQ's definitions format."),
      download),
    h('div', { class: 'panel' },
      h('h2', null, 'Import'),
      h('p', { class: 'muted' }, 'Objects in the file are created or updated; nothing is deleted.'),
      upload),
    status,
  );
  return {};
}
