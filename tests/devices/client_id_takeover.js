// Client id takeover with a real device library (MQTT.js, default settings but for the
// session): device B keeps a session with queued QoS 1 messages while it is offline; device A
// (certificate CN A) connecting with client id B must be refused (CONNACK "not authorized",
// MQTT 3.1.1 and 5), and B must then get its session and every queued message back. Also:
// a subscription to a filter the table can deliver nothing to is refused in SUBACK (128).
// Usage: node client_id_takeover.js PORT PKI_DIR   (PKI made by tools/grove-certs, things
// A and B, the broker's table: pub A t/ab, deliver A B t/ab). Prints PASS/FAIL lines.
'use strict';
const fs = require('fs');
const path = require('path');
const mqtt = require('mqtt');

const [port, pki] = process.argv.slice(2);
if (!port || !pki) {
  console.error('usage: node client_id_takeover.js PORT PKI_DIR');
  process.exit(2);
}
let failed = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'PASS' : 'FAIL'}: ${what}`);
  if (!ok) failed += 1;
};

function options(thing, clientId, extra) {
  return Object.assign({
    ca: fs.readFileSync(path.join(pki, 'ca.crt')),
    cert: fs.readFileSync(path.join(pki, 'devices', `${thing}.crt`)),
    key: fs.readFileSync(path.join(pki, 'devices', `${thing}.key`)),
    clientId,
    clean: false,  // a persistent session: what a takeover would steal
    connectTimeout: 5000,
  }, extra || {});
}

// Resolves with the client once connected (and the CONNACK), rejects on error or after 10 s.
function connect(thing, clientId, extra) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtts://127.0.0.1:${port}`, options(thing, clientId, extra));
    const timer = setTimeout(() => { c.end(true); reject(new Error('connect timed out')); }, 10000);
    c.once('connect', (connack) => { clearTimeout(timer); resolve({ c, connack }); });
    c.once('error', (err) => { clearTimeout(timer); c.end(true); reject(err); });
  });
}

const end = (c) => new Promise((resolve) => c.end(false, {}, resolve));

async function main() {
  const topic = 't/ab';
  const queued = ['queued-1', 'queued-2', 'queued-3'];

  // B: a persistent session with a QoS 1 subscription, then offline.
  const b1 = await connect('B', 'B');
  const granted = await b1.c.subscribeAsync(topic, { qos: 1 });
  check(granted.length === 1 && granted[0].qos === 1,
        `B's subscription to ${topic} is granted at QoS 1 (got ${JSON.stringify(granted)})`);
  try {
    await b1.c.subscribeAsync('nothing/for/b', { qos: 1 });
    check(false, 'B\'s subscription to a filter no rule delivers to B is refused in SUBACK');
  } catch (err) {
    // MQTT.js 5 rejects with the SUBACK packet attached.
    const code = err.packet && err.packet.granted ? err.packet.granted[0] : err.code;
    check(code === 128,
          `B's subscription to a filter no rule delivers to B is refused in SUBACK (code ${code}, want 128)`);
  }
  await end(b1.c);

  // A publishes while B is offline: queued in B's session.
  const a = await connect('A', 'A', { clean: true });
  for (const m of queued) await a.c.publishAsync(topic, m, { qos: 1 });
  await end(a.c);

  // A with B's client id, MQTT 3.1.1 and 5: refused, B's session untouched.
  for (const protocolVersion of [4, 5]) {
    try {
      const x = await connect('A', 'B', { protocolVersion });
      await end(x.c);
      check(false, `A connecting with client id B is refused (MQTT ${protocolVersion === 4 ? '3.1.1' : '5'})`);
    } catch (err) {
      const want = protocolVersion === 4 ? 5 : 135;
      check(err.code === want,
            `A connecting with client id B is refused as not authorized (MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}; code ${err.code}, want ${want})`);
    }
  }

  // B comes back: its session and every queued message are there.
  const got = [];
  const b2 = await new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtts://127.0.0.1:${port}`, options('B', 'B'));
    const timer = setTimeout(() => { c.end(true); reject(new Error('B did not reconnect')); }, 10000);
    c.on('message', (t, payload) => got.push(payload.toString()));
    c.once('connect', (connack) => { clearTimeout(timer); resolve({ c, connack }); });
    c.once('error', (err) => { clearTimeout(timer); c.end(true); reject(err); });
  });
  check(b2.connack.sessionPresent === true, 'B reconnects to its kept session (session present)');
  const deadline = Date.now() + 10000;
  while (got.length < queued.length && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  check(queued.every((m) => got.includes(m)),
        `B receives every QoS 1 message queued while it was offline (got ${JSON.stringify(got)})`);
  await end(b2.c);
}

main().then(() => process.exit(failed ? 1 : 0), (err) => {
  console.log(`FAIL: ${err.message}`);
  process.exit(1);
});
