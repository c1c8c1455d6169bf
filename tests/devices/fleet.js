// A fleet of devices on MQTT.js with its default settings (reconnect every second, clean
// session, resubscribe after a reconnect, give up on a refused CONNACK), over mutual TLS
// with certificates from tools/grove-certs; client id = thing name. Subscribers alternate
// MQTT 3.1.1 and 5.
//
// Usage: node fleet.js PORT PKI PUBLISHER SUBSCRIBER...
//   PKI: a tools/grove-certs directory (ca.crt, devices/<thing>.{crt,key}).
// Every subscriber subscribes to fleet/# at QoS 1. Commands on stdin, one per line:
//   pub TAG N   the publisher publishes N QoS 1 messages TAG-0 .. TAG-(N-1) on fleet/TAG,
//               one every 10 ms (MQTT.js keeps them while offline), and prints
//               "acked TAG N" once all were acknowledged (or "nacked TAG <error>").
// Events on stdout, one per line, prefixed by milliseconds since the epoch:
//   connect T | close T | subscribed T | recv T <payload>
//   refused T <reason code> <message>   the broker refused the CONNECT (a CONNACK with a
//                                       reason code): MQTT.js gives up on the device
//   error T <message>                   anything else, e.g. "connect ECONNREFUSED ..."
//                                       while no broker listens (retried every second)
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const mqtt = require('mqtt');

const [port, pki, publisher, ...subscribers] = process.argv.slice(2);
if (!port || !pki || !publisher || subscribers.length === 0) {
  console.error('usage: node fleet.js PORT PKI PUBLISHER SUBSCRIBER...');
  process.exit(2);
}

function event(...words) {
  process.stdout.write(`${Date.now()} ${words.join(' ')}\n`);
}

function device(thing, protocolVersion) {
  const client = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
    clientId: thing,
    protocolVersion,
    ca: fs.readFileSync(path.join(pki, 'ca.crt')),
    cert: fs.readFileSync(path.join(pki, 'devices', `${thing}.crt`)),
    key: fs.readFileSync(path.join(pki, 'devices', `${thing}.key`)),
  });
  client.on('connect', () => event('connect', thing));
  client.on('close', () => event('close', thing));
  client.on('error', (err) => {
    const text = String(err.message).replace(/\s+/g, ' ');
    // MQTT.js gives a CONNACK refusal its reason code, a number; socket errors a string.
    if (typeof err.code === 'number') event('refused', thing, err.code, text);
    else event('error', thing, text);
  });
  return client;
}

const pub = device(publisher, 4);
subscribers.forEach((thing, i) => {
  const client = device(thing, i % 2 === 0 ? 4 : 5);
  client.on('message', (_topic, payload) => event('recv', thing, payload.toString()));
  // Once: MQTT.js subscribes again by itself after a reconnect (resubscribe: true).
  client.once('connect', () => {
    client.subscribe('fleet/#', { qos: 1 }, (err) => {
      if (err) event('error', thing, `subscribe: ${err.message}`);
      else event('subscribed', thing);
    });
  });
  // Resubscriptions after a reconnect are SUBACKed too; report them as well.
  client.on('packetreceive', (packet) => {
    if (packet.cmd === 'suback') event('suback', thing);
  });
});

function publish(tag, n) {
  let acked = 0;
  let failed = false;
  let i = 0;
  const timer = setInterval(() => {
    if (i >= n) {
      clearInterval(timer);
      return;
    }
    const payload = `${tag}-${i++}`;
    pub.publish(`fleet/${tag}`, payload, { qos: 1 }, (err) => {
      if (err) {
        if (!failed) event('nacked', tag, String(err.message).replace(/\s+/g, ' '));
        failed = true;
        return;
      }
      if (++acked === n) event('acked', tag, n);
    });
  }, 10);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, tag, n] = line.trim().split(/\s+/);
  if (cmd === 'pub') publish(tag, Number(n));
});
