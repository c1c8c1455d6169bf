// A generic component speaking Greengrass IPC through AWS's own client
// (aws-iot-device-sdk-v2's greengrasscoreipc, tests/devices), for ipc_test.py.
// Usage: node ipc_component.js sub|pub WORK_DIR
// sub: subscribes to ipc/test/# (each message a line of WORK_DIR/received), reads its
//   configuration (WORK_DIR/config: the whole, WORK_DIR/greeting: keyPath [greeting]),
//   tries a publish its accessControl does not allow (WORK_DIR/denied: the error),
//   reports RUNNING; defers each deployment's first preUpdateEvent by 1 s, answers the
//   second (WORK_DIR/updates: "defer <id>", "ack <id>", "post <id>"), and rejects a
//   configuration with `bad: true` (WORK_DIR/validations: "<ACCEPTED|REJECTED> <id>").
//   Then, each time WORK_DIR/again appears, GetConfiguration of greeting (WORK_DIR/again.log).
// pub: publishes {"n": i, "from": "pub"} on ipc/test/hello every 200 ms.
// startup (a startup step that never exits): reports RUNNING (WORK_DIR/pid: its pid).
// shadow: shadow operations on thing ipc-thing (its accessControl allows it only), each
//   a JSON line of WORK_DIR/shadow ({step, value} or {step, error: the shape, message});
//   then, each time WORK_DIR/again appears, one more GetThingShadow (step "again").
// iotcore: SubscribeToIoTCore cloud/down/# (each message a line `<topic> <payload>` of
//   WORK_DIR/iot, "subscribed" once answered), PublishToIoTCore on cloud/up/hello every
//   500 ms, and a publish and a subscribe its policy does not allow (lines
//   `denied-publish|denied-subscribe <shape> <message>`).
// config: reads its key `dyn` at start ("start <JSON>", "start none" when missing: an
//   earlier run's UpdateConfiguration is kept), subscribes to its own configuration's key
//   `dyn` and to e2e.IpcSub's `greeting`
//   (each event a line `own|sub <event JSON>` of WORK_DIR/config), UpdateConfiguration
//   dyn {x: 1} ("updated"), GetConfiguration of dyn (`value <JSON>`), an UpdateConfiguration
//   with an older timestamp (`stale <shape>`), one nested 100 deep (`deep <shape>`), then
//   "ready".
// control: PauseComponent / ResumeComponent on request: each time WORK_DIR/cmd appears
//   (a line `pause|resume <component>`), the call, then a JSON line of WORK_DIR/control:
//   {cmd, name, ok: true} or {cmd, name, error: the shape, message}. An error shape the
//   client's model does not list for the operation (Greengrass' InvalidArgumentsError)
//   comes as the client's own error, its description naming the shape.
// flaky (a run): its first run (no WORK_DIR/runs yet) reports ERRORED, the next RUNNING;
//   each run a line of WORK_DIR/runs.
const fs = require('fs');
const path = require('path');
const { greengrasscoreipc } = require('aws-iot-device-sdk-v2');

const [role, work] = process.argv.slice(2);
const line = (file, text) => fs.appendFileSync(path.join(work, file), text + '\n');

async function main() {
  const client = greengrasscoreipc.createClient();
  await client.connect();
  // The error shape as the wire names it (aws.greengrass#X), beside its message.
  for (const [name, fn] of client.serviceModel.deserializers)
    if (name.endsWith('Error'))
      client.serviceModel.deserializers.set(name, (m) => Object.assign(fn(m), { shape: name }));
  if (role === 'shadow') {
    await shadow(client);
    return;
  }
  if (role === 'config') {
    await config(client);
    return;
  }
  if (role === 'iotcore') {
    await iotcore(client);
    return;
  }
  if (role === 'control') {
    control(client);
    return;
  }
  if (role === 'startup') {
    fs.writeFileSync(path.join(work, 'pid'), String(process.pid));
    await client.updateState({ state: 'RUNNING' });
    setInterval(() => {}, 1000);
    return;
  }
  if (role === 'flaky') {
    const first = !fs.existsSync(path.join(work, 'runs'));
    line('runs', String(process.pid));
    await client.updateState({ state: first ? 'ERRORED' : 'RUNNING' });
    setInterval(() => {}, 1000);
    return;
  }
  if (role === 'pub') {
    let n = 0;
    setInterval(() => {
      client.publishToTopic({
        topic: 'ipc/test/hello',
        publishMessage: { jsonMessage: { message: { n: n++, from: 'pub' } } },
      }).catch((e) => line('errors', String(e)));
    }, 200);
    return;
  }
  const sub = client.subscribeToTopic({ topic: 'ipc/test/#' });
  sub.on('message', (m) => line('received', JSON.stringify(m.jsonMessage || {
    binary: Buffer.from(m.binaryMessage.message).toString('utf8'),
    context: m.binaryMessage.context,
  })));
  await sub.activate();
  const whole = await client.getConfiguration({ keyPath: [] });
  fs.writeFileSync(path.join(work, 'config'), JSON.stringify(whole));
  const greeting = await client.getConfiguration({ keyPath: ['greeting'] });
  fs.writeFileSync(path.join(work, 'greeting'), JSON.stringify(greeting));
  try {
    await client.publishToTopic({
      topic: 'forbidden/x', publishMessage: { jsonMessage: { message: {} } } });
    line('denied', 'allowed');
  } catch (e) {
    line('denied', (e.serviceError && e.serviceError.message) || String(e));
  }
  const seen = {};
  const updates = client.subscribeToComponentUpdates({});
  updates.on('message', async (ev) => {
    if (ev.preUpdateEvent) {
      const id = ev.preUpdateEvent.deploymentId;
      seen[id] = (seen[id] || 0) + 1;
      const first = seen[id] === 1;
      line('updates', (first ? 'defer ' : 'ack ') + id);
      await client.deferComponentUpdate({
        deploymentId: id, message: first ? 'busy' : 'ready', recheckAfterMs: first ? 1000 : 0 });
    } else if (ev.postUpdateEvent) {
      line('updates', 'post ' + ev.postUpdateEvent.deploymentId);
    }
  });
  await updates.activate();
  const checks = client.subscribeToValidateConfigurationUpdates({});
  checks.on('message', async (ev) => {
    const e = ev.validateConfigurationUpdateEvent;
    const bad = e.configuration && e.configuration.bad === true;
    line('validations', (bad ? 'REJECTED ' : 'ACCEPTED ') + e.deploymentId);
    await client.sendConfigurationValidityReport({ configurationValidityReport: {
      status: bad ? 'REJECTED' : 'ACCEPTED', deploymentId: e.deploymentId,
      message: bad ? 'bad is not allowed' : 'fine' } });
  });
  await checks.activate();
  await client.updateState({ state: 'RUNNING' });
  line('ready', 'ready');
  // Each time WORK_DIR/again appears: GetConfiguration of greeting on this same
  // connection (a line `again <JSON>` of WORK_DIR/again.log, or `again-error <error>`).
  const again = path.join(work, 'again');
  setInterval(async () => {
    if (!fs.existsSync(again))
      return;
    fs.unlinkSync(again);
    try {
      line('again.log', 'again ' + JSON.stringify(await client.getConfiguration({ keyPath: ['greeting'] })));
    } catch (e) {
      line('again.log', 'again-error ' + String((e && e.serviceError && e.serviceError.message) || e));
    }
  }, 200);
}

function control(client) {
  const cmd = path.join(work, 'cmd');
  let busy = false;
  setInterval(async () => {
    if (busy || !fs.existsSync(cmd))
      return;
    busy = true;
    const [what, name] = fs.readFileSync(cmd, 'utf8').trim().split(/\s+/);
    fs.unlinkSync(cmd);
    const call = what === 'pause' ? client.pauseComponent({ componentName: name })
      : client.resumeComponent({ componentName: name });
    try {
      await call;
      line('control', JSON.stringify({ cmd: what, name, ok: true }));
    } catch (e) {
      const se = e.serviceError || {};
      line('control', JSON.stringify({ cmd: what, name, error: se.shape || e.description || String(e),
        message: se.message }));
    }
    busy = false;
  }, 100);
}

async function config(client) {
  // What an UpdateConfiguration of an earlier run left (it is kept across restarts).
  const before = await client.getConfiguration({ keyPath: ['dyn'] }).then(
    (got) => JSON.stringify(got.value), () => 'none');
  line('config', 'start ' + before);
  const own = client.subscribeToConfigurationUpdate({ keyPath: ['dyn'] });
  own.on('message', (ev) => line('config', 'own ' + JSON.stringify(ev.configurationUpdateEvent)));
  await own.activate();
  const sub = client.subscribeToConfigurationUpdate({ componentName: 'e2e.IpcSub', keyPath: ['greeting'] });
  sub.on('message', (ev) => line('config', 'sub ' + JSON.stringify(ev.configurationUpdateEvent)));
  await sub.activate();
  await client.updateConfiguration({ keyPath: ['dyn'], valueToMerge: { x: 1 }, timestamp: new Date() });
  line('config', 'updated');
  const got = await client.getConfiguration({ keyPath: ['dyn'] });
  line('config', 'value ' + JSON.stringify(got.value));
  try {
    await client.updateConfiguration({
      keyPath: ['dyn'], valueToMerge: { x: 2 }, timestamp: new Date(Date.now() - 60000) });
    line('config', 'stale accepted');
  } catch (e) {
    line('config', 'stale ' + ((e.serviceError && e.serviceError.shape) || String(e)));
  }
  let deep = 1;
  for (let i = 0; i < 100; ++i)
    deep = { d: deep };
  try {
    await client.updateConfiguration({ keyPath: ['deep'], valueToMerge: deep, timestamp: new Date() });
    line('config', 'deep accepted');
  } catch (e) {
    line('config', 'deep ' + ((e.serviceError && e.serviceError.shape) || String(e)));
  }
  line('config', 'ready');
  setInterval(() => {}, 1000);
}

async function iotcore(client) {
  const { QOS } = require('aws-iot-device-sdk-v2').greengrasscoreipc.model;
  const denied = (what, e) => {
    const se = e.serviceError || {};
    line('iot', `${what} ${se.shape || String(e)} ${se.message}`);
  };
  const sub = client.subscribeToIoTCore({ topicName: 'cloud/down/#', qos: QOS.AT_LEAST_ONCE });
  sub.on('message', (m) => line('iot',
    `${m.message.topicName} ${Buffer.from(m.message.payload).toString()}`));
  await sub.activate();
  line('iot', 'subscribed');
  try {
    await client.publishToIoTCore({ topicName: 'forbidden/up', qos: QOS.AT_LEAST_ONCE, payload: 'x' });
    line('iot', 'denied-publish allowed');
  } catch (e) {
    denied('denied-publish', e);
  }
  try {
    const bad = client.subscribeToIoTCore({ topicName: 'forbidden/#', qos: QOS.AT_LEAST_ONCE });
    bad.on('streamError', () => {});
    await bad.activate();
    line('iot', 'denied-subscribe allowed');
  } catch (e) {
    denied('denied-subscribe', e);
  }
  let n = 0;
  setInterval(() => {
    client.publishToIoTCore({ topicName: 'cloud/up/hello', qos: QOS.AT_LEAST_ONCE,
      payload: JSON.stringify({ from: 'component', n: n++ }) })
      .catch((e) => line('errors', String(e && e.serviceError ? e.serviceError.message : e)));
  }, 500);
}

async function shadow(client) {
  const record = async (step, call) => {
    try {
      const r = await call();
      const value = r.payload !== undefined
        ? JSON.parse(Buffer.from(r.payload).toString()) : r;
      line('shadow', JSON.stringify({ step, value }));
    } catch (e) {
      const se = e.serviceError || {};
      line('shadow', JSON.stringify({ step, error: se.shape || String(e), message: se.message }));
    }
  };
  const thingName = 'ipc-thing';
  await record('update', () => client.updateThingShadow({
    thingName, payload: JSON.stringify({ state: { reported: { t: 1 } } }) }));
  await record('get', () => client.getThingShadow({ thingName }));
  await record('update-named', () => client.updateThingShadow({
    thingName, shadowName: 'cfg', payload: JSON.stringify({ state: { desired: { on: true } } }) }));
  await record('update-named2', () => client.updateThingShadow({
    thingName, shadowName: 'cfg2', payload: JSON.stringify({ state: { desired: { on: false } } }) }));
  let page = null;
  await record('list1', async () => (page = await client.listNamedShadowsForThing({ thingName, pageSize: 1 })));
  await record('list2', () => client.listNamedShadowsForThing({
    thingName, pageSize: 1, nextToken: page && page.nextToken }));
  await record('delete-named', () => client.deleteThingShadow({ thingName, shadowName: 'cfg' }));
  await record('get-deleted', () => client.getThingShadow({ thingName, shadowName: 'cfg' }));
  await record('get-other', () => client.getThingShadow({ thingName: 'other-thing' }));
  await record('update-bad', () => client.updateThingShadow({ thingName, payload: 'not json' }));
  line('shadow', JSON.stringify({ step: 'done' }));
  const again = path.join(work, 'again');
  setInterval(async () => {
    if (!fs.existsSync(again))
      return;
    fs.unlinkSync(again);
    await record('again', () => client.getThingShadow({ thingName }));
  }, 200);
}

main().catch((e) => {
  line('errors', String(e && e.stack ? e.stack : e));
  process.exit(1);
});
