// The console's pages: plain ES module, no build step, nothing from a CDN. Data comes from
// /api/ (JSON) and two server-sent event streams: /api/events (the daemon status each
// interval) and /api/messages?filter= (bus messages). Every state-changing request carries
// the session's CSRF token in X-CSRF-Token.

let csrf = '';
let lastStatus = null;
const statusListeners = new Set();
const history = {bus: [], plugins: new Map()}; // message rates for the sparklines
const maxPoints = 60;
let messageSource = null;
let logSource = null; // a function's log followed live

// --- helpers -------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'onclick' || k === 'onsubmit' || k === 'onchange') el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const opt = {method, headers: {}, credentials: 'same-origin'};
  if (method !== 'GET') {
    opt.headers['Content-Type'] = 'application/json';
    opt.headers['X-CSRF-Token'] = csrf;
    opt.body = JSON.stringify(body ?? {});
  }
  const r = await fetch(path, opt);
  if (r.status === 401) {
    location.href = '/login.html';
    throw new Error('log in first');
  }
  const j = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(j.error || `${r.status} ${r.statusText}`);
  return j;
}

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60), ss = s % 60;
  return (d ? `${d}d ` : '') + `${hh}h ${m}m ${ss}s`;
}

function sparkline(points, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${maxPoints} 20`);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('preserveAspectRatio', 'none');
  const max = Math.max(1, ...points);
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', points.map((v, i) => `${i + maxPoints - points.length},${19 - v / max * 18}`).join(' '));
  svg.append(line);
  const title = document.createElementNS(ns, 'title');
  title.textContent = `${label}: last ${points.length} samples, max ${max.toFixed(1)}/s`;
  svg.append(title);
  return svg;
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > maxPoints) arr.shift();
}

function section(title, ...children) {
  return h('section', {class: 'card'}, h('h2', {}, title), ...children);
}

function table(headers, rows, attrs = {}) {
  return h('table', attrs, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
           h('tbody', {}, rows));
}

function plugin(name) {
  return lastStatus?.plugins.find((p) => p.name === name);
}

// --- live status ---------------------------------------------------------------------------

let prev = null;
function onStatus(s) {
  const t = performance.now() / 1000;
  if (prev) {
    const dt = Math.max(0.001, t - prev.t);
    push(history.bus, (s.bus.published - prev.s.bus.published) / dt);
    for (const p of s.plugins) {
      const before = prev.s.plugins.find((q) => q.name === p.name);
      if (!history.plugins.has(p.name)) history.plugins.set(p.name, []);
      push(history.plugins.get(p.name), before ? Math.max(0, p.delivered - before.delivered) / dt : 0);
    }
  }
  prev = {s, t};
  lastStatus = s;
  document.getElementById('live').textContent =
    `live: groved ${s.version}, up ${duration(s.uptime_seconds)}, updated ${new Date().toLocaleTimeString()}`;
  for (const f of statusListeners) f(s);
}

function connectStatus() {
  const es = new EventSource('/api/events');
  es.addEventListener('status', (ev) => onStatus(JSON.parse(ev.data)));
  es.addEventListener('failure', (ev) => {
    document.getElementById('live').textContent = `status: ${JSON.parse(ev.data).error}`;
  });
  es.onerror = () => {
    document.getElementById('live').textContent = 'live status lost; reconnecting…';
    // A 401 (session over) closes the stream: back to the login page.
    fetch('/api/session', {credentials: 'same-origin'}).then((r) => {
      if (r.status === 401) location.href = '/login.html';
    });
  };
}

// --- pages ---------------------------------------------------------------------------------

const pages = {
  overview(main) {
    const info = h('dl', {id: 'overview-info'});
    const group = h('dl', {id: 'overview-group'});
    const bus = h('div', {id: 'overview-bus'});
    const counters = h('div', {id: 'overview-plugins'});
    // Which plugins' counters the operator opened, kept across the live updates.
    const openDetails = new Set();
    counters.addEventListener('toggle', (ev) => {
      const name = ev.target.getAttribute('data-plugin');
      if (ev.target.open) openDetails.add(name); else openDetails.delete(name);
    }, true);
    main.append(section('groved', info), section('Group', group), section('Bus', bus),
                section('Plugins and their counters', counters));
    api('GET', '/api/group').then((g) => {
      group.replaceChildren(
        h('dt', {}, 'name'), h('dd', {}, g.name || '(none)'), h('dt', {}, 'version'), h('dd', {}, g.version),
        h('dt', {}, 'devices'), h('dd', {}, g.devices.length), h('dt', {}, 'functions'),
        h('dd', {}, g.functions.length), h('dt', {}, 'subscriptions'), h('dd', {}, g.subscriptions.length));
    }).catch((e) => group.replaceChildren(h('p', {class: 'error'}, e.message)));
    return (s) => {
      info.replaceChildren(
        h('dt', {}, 'version'), h('dd', {id: 'groved-version'}, s.version),
        h('dt', {}, 'uptime'), h('dd', {}, duration(s.uptime_seconds)),
        h('dt', {}, 'image profile'), h('dd', {}, s.config_file || '(none)'),
        h('dt', {}, 'pid'), h('dd', {}, s.pid));
      bus.replaceChildren(
        h('p', {}, `published ${s.bus.published}, delivered ${s.bus.delivered}, dropped ${s.bus.dropped}, ` +
                   `unrouted ${s.bus.unrouted}, refused (too large) ${s.bus.refused_too_large}, ` +
                   `subscriptions ${s.bus.subscriptions}`),
        h('p', {}, 'messages published per second: ', sparkline(history.bus, 'bus published')));
      counters.replaceChildren(...s.plugins.map((p) => h('details', {open: openDetails.has(p.name), 'data-plugin': p.name},
        h('summary', {}, `${p.name} (${p.state}) `, sparkline(history.plugins.get(p.name) ?? [], `${p.name} delivered`)),
        p.metrics.length ? table(['counter / gauge', 'labels', 'value'], p.metrics.map((m) => h('tr', {},
          h('td', {}, m.name), h('td', {}, Object.entries(m.labels).map(([k, v]) => `${k}=${v}`).join(' ')),
          h('td', {class: 'num'}, m.value)))) : h('p', {}, 'no counters'))));
    };
  },

  plugins(main) {
    const result = h('pre', {id: 'plugin-result', class: 'result'});
    const rows = h('tbody', {id: 'plugin-rows'});
    const loadName = h('input', {id: 'load-name', placeholder: 'name'});
    const loadPath = h('input', {id: 'load-path', placeholder: 'library path (optional)'});
    const loadConfig = h('textarea', {id: 'load-config', rows: 3, placeholder: 'config as YAML or JSON (optional)'});
    const act = async (verb, body) => {
      result.className = 'result';
      result.textContent = `${verb} ${body.name}…`;
      try {
        const r = await api('POST', `/api/plugins/${verb}`, body);
        result.textContent = r.message + (r.plugin?.last_reload ? `\nlast_reload: ${r.plugin.last_reload}` : '');
      } catch (e) {
        result.className = 'result error';
        result.textContent = `grovectl: ${e.message}`;
      }
    };
    main.append(section('Plugins',
      h('table', {id: 'plugins-table'}, h('thead', {}, h('tr', {},
        ['name', 'state', 'version', 'restarts', 'queue', 'delivered', 'last reload', 'last error', 'reload from .so', ''].map((x) => h('th', {}, x)))), rows),
      result),
    section('Load or configure a plugin', h('form', {onsubmit: (ev) => {
      ev.preventDefault();
      act('load', {name: loadName.value, path: loadPath.value, config: loadConfig.value});
    }}, loadName, loadPath, loadConfig, h('button', {id: 'load-submit', type: 'submit'}, 'Load'),
      h('button', {id: 'configure-submit', type: 'button', onclick: () => {
        act('configure', {name: loadName.value, config: loadConfig.value});
      }}, 'Configure (live)')),
      h('p', {class: 'hint'}, 'Configure gives a running plugin this config, checked against its schema; live only: a restart of groved goes back to the image profile.')));
    // Rows are made once per plugin and their cells updated in place, so a button or an
    // input the operator is using is never replaced under the pointer.
    const made = new Map();
    const makeRow = (p) => {
      const cells = {};
      const cell = (k, cls) => (cells[k] = h('td', cls ? {class: cls} : {}));
      const path = h('input', {id: `reload-path-${p.name}`});
      const row = h('tr', {id: `plugin-${p.name}`}, h('td', {}, p.name), cell('state'), cell('version'),
        cell('restarts', 'num'), cell('queue', 'num'), cell('delivered', 'num'),
        h('td', {id: `last-reload-${p.name}`}, (cells.last_reload = document.createTextNode(''))),
        cell('last_error', 'error'), h('td', {}, path),
        h('td', {}, h('button', {id: `reload-${p.name}`, onclick: () => act('reload', {name: p.name, path: path.value})}, 'Reload'),
          h('button', {id: `unload-${p.name}`, onclick: () => {
            if (confirm(`Unload ${p.name}?`)) act('unload', {name: p.name});
          }}, 'Unload')));
      return {row, cells, path};
    };
    return (s) => {
      const names = new Set(s.plugins.map((p) => p.name));
      for (const [name, r] of made) if (!names.has(name)) { r.row.remove(); made.delete(name); }
      s.plugins.forEach((p, i) => {
        if (!made.has(p.name)) made.set(p.name, makeRow(p));
        const r = made.get(p.name);
        r.cells.state.textContent = p.state;
        r.cells.state.className = `state ${p.state}`;
        r.cells.version.textContent = p.version;
        r.cells.restarts.textContent = p.restarts;
        r.cells.queue.textContent = `${p.queue_depth}/${p.queue_capacity}`;
        r.cells.delivered.textContent = p.delivered;
        r.cells.last_reload.textContent = p.last_reload || '—';
        r.cells.last_error.textContent = p.last_error;
        r.path.placeholder = p.library;
        // In the status' order; a row already in place is not moved (that would blur an
        // input the operator is typing in).
        if (rows.children[i] !== r.row) rows.insertBefore(r.row, rows.children[i] ?? null);
      });
    };
  },

  messages(main) {
    const filter = h('input', {id: 'sub-filter', value: '#', placeholder: 'MQTT filter, e.g. $grove/mm/out/#'});
    const state = h('span', {id: 'sub-state'});
    const list = h('ol', {id: 'messages', class: 'messages', reversed: true});
    const stop = () => {
      if (messageSource) messageSource.close();
      messageSource = null;
      state.textContent = 'not subscribed';
    };
    const subscribe = (ev) => {
      ev.preventDefault();
      stop();
      list.replaceChildren();
      messageSource = new EventSource(`/api/messages?filter=${encodeURIComponent(filter.value)}`);
      messageSource.addEventListener('subscribed', (e) => { state.textContent = `watching ${JSON.parse(e.data).filter}`; });
      messageSource.addEventListener('lost', (e) => list.prepend(h('li', {class: 'error'}, `${e.data} messages lost (the page fell behind)`)));
      messageSource.addEventListener('message', (e) => {
        const m = JSON.parse(e.data);
        const p = m.payload;
        const body = p.kind === 'binary' ? p.hex : p.text;
        list.prepend(h('li', {class: `msg ${p.kind}`},
          h('div', {class: 'meta'}, h('code', {class: 'topic'}, m.topic), ` from ${m.source || '?'} · ${m.content_type || 'no type'} · ${p.size} bytes · ${p.kind}${p.truncated ? ' (truncated)' : ''}`),
          h('pre', {class: 'payload'}, body)));
        while (list.children.length > 200) list.lastChild.remove();
      });
      messageSource.onerror = () => { state.textContent = 'stream closed (reconnecting)'; };
    };
    const topic = h('input', {id: 'pub-topic', placeholder: 'MQTT topic'});
    const source = h('input', {id: 'pub-source', value: 'function:console'});
    const ctype = h('select', {id: 'pub-type'}, h('option', {value: ''}, 'auto (JSON or text)'),
                    h('option', {value: 'application/json'}, 'application/json'),
                    h('option', {value: 'text/plain; charset=utf-8'}, 'text/plain'));
    const payload = h('textarea', {id: 'pub-payload', rows: 4});
    const outcome = h('pre', {id: 'pub-result', class: 'result'});
    main.append(
      section('Subscribe', h('form', {onsubmit: subscribe}, filter, h('button', {id: 'sub-submit', type: 'submit'}, 'Subscribe'),
        h('button', {type: 'button', onclick: stop}, 'Stop')), state, list),
      section('Publish through message_manager',
        h('p', {class: 'hint'}, 'Routed by the group\'s subscriptions as a message from the source (the console\'s profile entry must may_claim it).'),
        h('form', {onsubmit: async (ev) => {
          ev.preventDefault();
          outcome.className = 'result';
          try {
            const r = await api('POST', '/api/publish', {topic: topic.value, source: source.value, content_type: ctype.value, payload: payload.value});
            outcome.textContent = r.outcome;
            if (!r.ok) outcome.className = 'result error';
          } catch (e) {
            outcome.className = 'result error';
            outcome.textContent = e.message;
          }
        }}, h('label', {}, 'topic ', topic), h('label', {}, 'source ', source), h('label', {}, 'content type ', ctype),
          payload, h('button', {id: 'pub-submit', type: 'submit'}, 'Publish')), outcome));
    state.textContent = 'not subscribed';
    return null;
  },

  devices(main) {
    const devices = h('tbody', {id: 'devices'});
    let things = [];
    // message_manager's per-device counter families (label "device"), as grovectl status.
    const perDevice = (name, thing) => plugin('message_manager')?.metrics
      .find((m) => m.name === name && m.labels.device === thing)?.value ?? 0;
    // Rows made once (their buttons stay under the pointer); the counters updated in place.
    const counts = new Map();
    const fill = () => {
      if (counts.size === 0) {
        devices.replaceChildren(...(things.length ? things.map((d) => {
          const connected = h('td', {class: 'connected'});
          const denied = h('td', {class: 'num'}), oversize = h('td', {class: 'num'});
          counts.set(d, {connected, denied, oversize});
          return h('tr', {id: `device-${d}`},
            h('td', {}, h('button', {type: 'button', class: 'link', onclick: () => { thing.value = d; get(); }}, d)),
            h('td', {}, d), connected, denied, oversize);
        }) : [h('tr', {}, h('td', {colspan: 5}, 'no devices in the group'))]));
      }
      for (const [d, c] of counts) {
        // broker.connected: the device's live connections (several client ids may share a thing).
        const n = perDevice('broker.connected', d);
        c.connected.textContent = n > 0 ? (n > 1 ? `yes (${n} connections)` : 'yes') : 'no';
        c.connected.className = `connected ${n > 0 ? 'yes' : 'no'}`;
        c.denied.textContent = perDevice('broker.denied_publish', d);
        c.oversize.textContent = perDevice('broker.refused_oversize', d);
      }
    };
    const thing = h('input', {id: 'shadow-thing', placeholder: 'thing name'});
    const name = h('input', {id: 'shadow-name', placeholder: 'shadow name (empty: classic)'});
    const doc = h('textarea', {id: 'shadow-doc', rows: 12});
    const outcome = h('pre', {id: 'shadow-result', class: 'result'});
    const show = (r) => {
      outcome.className = r.code === 200 ? 'result' : 'result error';
      outcome.textContent = r.code === 200 ? `version ${r.document.version ?? '?'}`
        : `${r.code}${r.code === 409 ? ' version conflict' : ''}: ${r.document.message ?? JSON.stringify(r.document)}`;
      if (r.code === 200) doc.value = JSON.stringify(r.document, null, 2);
    };
    const get = async () => {
      try {
        show(await api('GET', `/api/shadow?thing=${encodeURIComponent(thing.value)}&name=${encodeURIComponent(name.value)}`));
      } catch (e) { outcome.className = 'result error'; outcome.textContent = e.message; }
    };
    main.append(section('Devices of the group',
        h('table', {}, h('thead', {}, h('tr', {}, ['thing', 'certificate CN', 'connected', 'denied publishes', 'refused (too large)'].map((x) => h('th', {}, x)))), devices),
        h('p', {class: 'hint'}, plugin('message_manager') ? 'Devices authenticate with their certificate; its CN is the thing name.' : 'message_manager is not in this image.')),
      section('Shadow', h('form', {onsubmit: (ev) => { ev.preventDefault(); get(); }}, thing, name, h('button', {type: 'submit'}, 'Get')),
        h('p', {class: 'hint'}, 'Edit as an update document ({"state": {"desired": …}, "version": N}); a stale version is refused 409.'),
        doc, h('button', {type: 'button', onclick: async () => {
          try {
            show(await api('POST', '/api/shadow', {thing: thing.value, name: name.value, document: doc.value}));
          } catch (e) { outcome.className = 'result error'; outcome.textContent = e.message; }
        }}, 'Update'), outcome));
    api('GET', '/api/group').then((g) => { things = g.devices; fill(); })
      .catch((e) => devices.replaceChildren(h('tr', {}, h('td', {class: 'error', colspan: 5}, e.message))));
    return (s) => {
      fill();
      if (!plugin('shadow') && !outcome.textContent) outcome.textContent = 'shadows: the shadow plugin is not in this image';
    };
  },

  functions(main) {
    const body = h('div', {id: 'page-function_runtime'});
    const rows = h('tbody', {id: 'functions'});
    const fname = h('select', {id: 'fn-name'});
    const payload = h('textarea', {id: 'fn-payload', rows: 4, placeholder: 'payload (JSON for a json function)'});
    const result = h('pre', {id: 'fn-result', class: 'result'});
    const logTitle = h('span', {id: 'fn-log-title'}, 'no function chosen');
    const log = h('pre', {id: 'fn-log', class: 'log'});
    const follow = h('input', {id: 'fn-follow', type: 'checkbox'});
    const followState = h('span', {id: 'fn-follow-state', class: 'hint'});
    let chosen = '';
    let offset = 0;
    const stopFollow = () => {
      if (logSource) logSource.close();
      logSource = null;
      followState.textContent = '';
    };
    const startFollow = () => {
      stopFollow();
      if (!follow.checked || !chosen) return;
      logSource = new EventSource(`/api/functions/log/follow?name=${encodeURIComponent(chosen)}&offset=${offset}`);
      logSource.addEventListener('following', () => { followState.textContent = 'following live'; });
      logSource.addEventListener('log', (e) => {
        const m = JSON.parse(e.data);
        offset = m.offset;
        log.append(m.text);
        while (log.textContent.length > 262144) log.firstChild.remove();
        log.scrollTop = log.scrollHeight;
      });
      logSource.addEventListener('rotated', () => log.append('\n--- log rotated ---\n'));
      logSource.onerror = () => { followState.textContent = 'stream closed (reconnecting)'; };
    };
    const showLog = async (name) => {
      chosen = name;
      logTitle.textContent = `log of ${name}`;
      stopFollow();
      try {
        const r = await api('GET', `/api/functions/log?name=${encodeURIComponent(name)}`);
        offset = r.offset;
        log.replaceChildren((r.truncated ? '… (older lines: grovectl logs)\n' : '') + r.text);
        log.scrollTop = log.scrollHeight;
        startFollow();
      } catch (e) { log.replaceChildren(h('span', {class: 'error'}, e.message)); }
    };
    follow.addEventListener('change', startFollow);
    main.append(section('Functions', body,
      h('table', {id: 'functions-table'}, h('thead', {}, h('tr', {}, ['name', 'kind', 'instances (busy)', 'queued', 'invocations',
        'errors', 'timeouts', 'refused', 'memory (peak)', 'output lines dropped', 'last error'].map((x) => h('th', {}, x)))), rows)),
    section('Invoke', h('form', {onsubmit: async (ev) => {
      ev.preventDefault();
      result.className = 'result';
      result.textContent = `invoking ${fname.value}…`;
      try {
        const r = await api('POST', '/api/functions/invoke', {name: fname.value, payload: payload.value, content_type: ''});
        result.textContent = `${r.name} answered (${r.reply.size} bytes, ${r.reply.kind}):\n` +
          (r.reply.kind === 'binary' ? r.reply.hex : r.reply.text);
      } catch (e) {
        result.className = 'result error';
        result.textContent = `grovectl: ${e.message}`;
      }
    }}, h('label', {}, 'function ', fname), payload, h('button', {id: 'fn-invoke', type: 'submit'}, 'Invoke')), result),
    section('Log', h('p', {}, logTitle, ' ', h('label', {}, follow, ' follow'), ' ', followState), log));
    let busy = false;
    let last = 0;
    const made = new Map();
    const refresh = async () => {
      if (busy || Date.now() - last < 2000) return;
      busy = true;
      try {
        const r = await api('GET', '/api/functions');
        body.replaceChildren(h('p', {class: 'hint'}, `${r.functions.length} functions (as grovectl functions); click one for its log`));
        const names = new Set(r.functions.map((f) => f.name));
        for (const [n, row] of made) if (!names.has(n)) { row.tr.remove(); made.delete(n); }
        for (const f of r.functions) {
          if (!made.has(f.name)) {
            const cells = Array.from({length: 10}, (_, i) => h('td', i >= 3 && i <= 8 ? {class: 'num'} : {}));
            const tr = h('tr', {id: `function-${f.name}`},
              h('td', {}, h('button', {type: 'button', class: 'link', onclick: () => showLog(f.name)}, f.name)), ...cells);
            rows.append(tr);
            made.set(f.name, {tr, cells});
            fname.append(h('option', {value: f.name}, f.name));
          }
          const c = made.get(f.name).cells;
          c[0].textContent = !f.valid ? 'invalid' : f.pinned ? 'pinned' : 'on-demand';
          c[1].textContent = `${f.instances}/${f.max_instances} (${f.busy})`;
          c[2].textContent = `${f.queued}/${f.max_queue}`;
          c[3].textContent = f.invocations;
          c[4].textContent = f.errors;
          c[5].textContent = f.timeouts;
          c[6].textContent = f.refused;
          c[7].textContent = `${f.memory_hwm_kb} kB`;
          c[8].textContent = f.output_lines_dropped;
          c[9].textContent = f.last_error;
          c[9].className = 'error';
        }
        if (!r.functions.length) rows.replaceChildren(h('tr', {}, h('td', {colspan: 11}, 'no functions in the group')));
      } catch (e) {
        body.replaceChildren(h('p', {class: e.message.includes('not in this image') ? 'absent' : 'error'},
          e.message.includes('not in this image') ? 'function_runtime is not in this image.' : e.message));
      } finally {
        busy = false;
        last = Date.now();
      }
    };
    refresh();
    return () => refresh();
  },

  deployments(main) {
    const body = h('div', {id: 'page-deployment'});
    const rows = h('tbody', {id: 'deployments'});
    const installed = h('tbody', {id: 'installed'});
    const detail = h('div', {id: 'deployment-detail'}, h('p', {class: 'hint'}, 'click a deployment for its detail'));
    let chosen = '';
    const stateCell = (st) => h('td', {class: `state ${(st || '').toLowerCase()}`}, st || '—');
    const showDetail = async (id) => {
      chosen = id;
      try {
        const r = await api('GET', `/api/deployments/detail?id=${encodeURIComponent(id)}`);
        const d = r.deployment, x = r.execution;
        detail.replaceChildren(
          h('dl', {}, h('dt', {}, 'deployment'), h('dd', {id: 'detail-id'}, `${d.deploymentName || ''} ${d.deploymentId}`),
            h('dt', {}, 'target'), h('dd', {}, d.targetArn), h('dt', {}, 'revision'), h('dd', {}, d.revisionId),
            h('dt', {}, 'status'), h('dd', {id: 'detail-status'}, d.deploymentStatus),
            h('dt', {}, 'on this core'), h('dd', {id: 'detail-execution'}, x ? x.coreDeviceExecutionStatus : '—'),
            h('dt', {}, 'last error'), h('dd', {id: 'detail-reason', class: 'error'}, x?.reason || '—'),
            h('dt', {}, 'failure policy'), h('dd', {}, d.deploymentPolicies?.failureHandlingPolicy ?? '—')),
          h('h3', {}, 'Components (their state on this core now)'),
          table(['component', 'requested', 'installed', 'state', 'last error / details'], r.components.map((c) =>
            h('tr', {id: `detail-component-${c.componentName}`}, h('td', {}, c.componentName), h('td', {}, c.requestedVersion),
              h('td', {}, c.installed?.componentVersion ?? 'not installed'), stateCell(c.installed?.lifecycleState),
              h('td', {}, c.installed?.lifecycleStateDetails ?? '')))));
      } catch (e) { detail.replaceChildren(h('p', {class: 'error'}, e.message)); }
    };
    main.append(section('Deployments', body,
      h('table', {id: 'deployments-table'}, h('thead', {}, h('tr', {}, ['deployment', 'name', 'target', 'revision', 'status', 'created'].map((x) => h('th', {}, x)))), rows)),
    section('Deployment detail', detail),
    section('Installed components', h('table', {id: 'installed-table'}, h('thead', {}, h('tr', {},
      ['component', 'version', 'state', 'last error / details', 'root', 'updated'].map((x) => h('th', {}, x)))), installed)));
    let busy = false;
    let last = 0;
    const when = (t) => (t ? new Date(t * 1000).toLocaleString() : '');
    const refresh = async () => {
      if (busy || Date.now() - last < 2000) return;
      busy = true;
      try {
        const r = await api('GET', '/api/deployments');
        body.replaceChildren(h('p', {class: 'hint'}, `${r.deployments.length} deployments, newest first (as grovectl deployments list)`));
        rows.replaceChildren(...(r.deployments.length ? r.deployments.map((d) => h('tr', {id: `deployment-${d.deploymentId}`},
          h('td', {}, h('button', {type: 'button', class: 'link', onclick: () => showDetail(d.deploymentId)}, d.deploymentId)),
          h('td', {}, d.deploymentName || ''), h('td', {}, d.targetArn), h('td', {class: 'num'}, d.revisionId),
          stateCell(d.deploymentStatus), h('td', {}, when(d.creationTimestamp))))
          : [h('tr', {}, h('td', {colspan: 6}, 'no deployments'))]));
        installed.replaceChildren(...(r.installed.length ? r.installed.map((c) => h('tr', {id: `installed-${c.componentName}`},
          h('td', {}, c.componentName), h('td', {}, c.componentVersion), stateCell(c.lifecycleState),
          h('td', {}, c.lifecycleStateDetails ?? ''), h('td', {}, c.isRoot ? 'yes' : 'no'),
          h('td', {}, when(c.lastStatusChangeTimestamp))))
          : [h('tr', {}, h('td', {colspan: 6}, 'no components installed'))]));
        if (chosen) showDetail(chosen);
      } catch (e) {
        body.replaceChildren(h('p', {class: e.message.includes('not in this image') ? 'absent' : 'error'},
          e.message.includes('not in this image') ? 'deployment is not in this image.' : e.message));
      } finally {
        busy = false;
        last = Date.now();
      }
    };
    refresh();
    return () => refresh();
  },
};

function show() {
  const name = (location.hash.slice(1) || 'overview');
  const page = pages[name] ?? pages.overview;
  const main = document.getElementById('main');
  main.replaceChildren();
  statusListeners.clear();
  if (messageSource && name !== 'messages') { messageSource.close(); messageSource = null; }
  if (logSource) { logSource.close(); logSource = null; }
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.getAttribute('href') === `#${name}`);
  const update = page(main);
  if (update) {
    statusListeners.add(update);
    if (lastStatus) update(lastStatus);
  }
}

async function boot() {
  const s = await api('GET', '/api/session');
  csrf = s.csrf;
  document.getElementById('who').textContent = s.name;
  document.getElementById('logout').addEventListener('click', async () => {
    await api('POST', '/api/logout').catch(() => {});
    location.href = '/login.html';
  });
  window.addEventListener('hashchange', show);
  show();
  connectStatus();
}

boot().catch((e) => { document.getElementById('main').textContent = e.message; });
