// A client device through Greengrass v2's MQTT bridge (message_manager's bridge): MQTT.js
// over mutual TLS, MQTT 5, default options. Subscribes to FILTER, then publishes PAYLOAD
// on TOPIC once a second (a Lambda component may still be starting) until a message
// arrives on FILTER, prints it as `recv <topic> <payload> source=<grove-source>` and
// exits 0; exits 1 after 30 s without one (or on a refused SUBACK or an error).
// Usage: node bridge_device.js PORT PKI_DIR THING FILTER TOPIC PAYLOAD
'use strict';
const fs = require('fs');
const path = require('path');
const mqtt = require('mqtt');

const [port, pki, thing, filter, topic, payload] = process.argv.slice(2);
if (!payload) {
  console.error('usage: node bridge_device.js PORT PKI_DIR THING FILTER TOPIC PAYLOAD');
  process.exit(2);
}
const c = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
  ca: fs.readFileSync(path.join(pki, 'ca.crt')),
  cert: fs.readFileSync(path.join(pki, 'devices', `${thing}.crt`)),
  key: fs.readFileSync(path.join(pki, 'devices', `${thing}.key`)),
  clientId: `${thing}-bridge`,
  protocolVersion: 5,
});
let timer = null;
const done = (code, line) => {
  console.log(line);
  clearInterval(timer);
  c.end(true, () => process.exit(code));
};
setTimeout(() => done(1, `timeout: nothing on ${filter} within 30 s`), 30000);
c.on('error', (e) => done(1, `error ${e.message}`));
c.on('message', (t, p, packet) => {
  const props = (packet.properties && packet.properties.userProperties) || {};
  done(0, `recv ${t} ${p.toString()} source=${props['grove-source'] || ''}`);
});
c.on('connect', () => {
  c.subscribe(filter, { qos: 1 }, (err, granted) => {
    if (err || !granted.length || granted[0].qos > 2)
      return done(1, `subscribe ${filter} refused: ${err ? err.message : JSON.stringify(granted)}`);
    const send = () => c.publish(topic, payload, { qos: 1 });
    send();
    timer = setInterval(send, 1000);
  });
});
