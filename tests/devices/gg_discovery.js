// A device that finds its core the Greengrass way: AWS's device SDK (npm
// aws-iot-device-sdk-v2, greengrass.DiscoveryClient on aws-crt) asks the core's discovery
// endpoint with the device's certificate, then MQTT.js connects to the core's broker at a
// discovered host and port, trusting exactly the discovered CAs.
//
// The SDK connects to port 443 (8443 without ALPN) of the endpoint name; the core's
// discovery port is configurable, so the client's connection manager is rebuilt with the
// same arguments on the test's port. Everything else (the request, the parsing of the
// answer) is the SDK's own.
//
// Usage:
//   node gg_discovery.js discover PORT CA PKI THING [PATH_THING]
//     THING's certificate (PKI/devices/THING.{crt,key}) asks for PATH_THING (default
//     THING), trusting CA for the endpoint. Prints one line and exits 0 on an answer:
//       ok <the SDK's DiscoverResponse as JSON>
//     or exits 1 with: error <HTTP status or 0> <message>
//   node gg_discovery.js relay PORT CA PKI PUB SUB TOPIC PAYLOAD
//     PUB and SUB discover; SUB connects to the discovered broker and subscribes to TOPIC,
//     PUB connects and publishes PAYLOAD on it. Prints `received <topic> <payload>` and
//     exits 0 when SUB gets it (exit 1 with `error ...` otherwise, within 20 s).
'use strict';

const fs = require('fs');
const path = require('path');
const { greengrass, io, http } = require('aws-iot-device-sdk-v2');
const mqtt = require('mqtt');

const ENDPOINT = 'localhost'; // the name in the core's server certificate

function discovery_client(port, ca, pki, thing) {
  const opts = io.TlsContextOptions.create_client_with_mtls_from_path(
    path.join(pki, 'devices', `${thing}.crt`), path.join(pki, 'devices', `${thing}.key`));
  opts.override_default_trust_store_from_path(undefined, ca);
  const tls = new io.ClientTlsContext(opts);
  const bootstrap = new io.ClientBootstrap();
  const socket = new io.SocketOptions(io.SocketType.STREAM, io.SocketDomain.IPV4, 5000);
  const client = new greengrass.DiscoveryClient(bootstrap, socket, tls, 'us-east-1', ENDPOINT);
  const alpn = io.is_alpn_available() ? ['x-amzn-http-ca'] : undefined;
  client.connection_manager = new http.HttpClientConnectionManager(
    bootstrap, ENDPOINT, Number(port), 4, 16 * 1024, socket,
    new io.TlsConnectionOptions(tls, ENDPOINT, alpn));
  return client;
}

async function discover(port, ca, pki, thing, path_thing) {
  return discovery_client(port, ca, pki, thing).discover(path_thing || thing);
}

function fail(err) {
  const status = err && err.response_code ? err.response_code : 0;
  const text = String(err && err.message ? err.message : err).replace(/\s+/g, ' ');
  process.stdout.write(`error ${status} ${text}\n`);
  process.exit(1);
}

// Connects THING to the first discovered endpoint that takes it, with only the
// discovered CAs as trust.
async function connect(answer, pki, thing) {
  const group = answer.gg_groups[0];
  if (!group) throw new Error(`${thing}: no group in the answer`);
  const ca = group.certificate_authorities.join('');
  for (const core of group.cores) {
    for (const c of core.connectivity) {
      try {
        return await new Promise((resolve, reject) => {
          const client = mqtt.connect(`mqtts://${c.host_address}:${c.port}`, {
            clientId: thing,
            ca,
            cert: fs.readFileSync(path.join(pki, 'devices', `${thing}.crt`)),
            key: fs.readFileSync(path.join(pki, 'devices', `${thing}.key`)),
            reconnectPeriod: 0,
            connectTimeout: 5000,
          });
          client.once('connect', () => resolve(client));
          client.once('error', (e) => { client.end(true); reject(e); });
        });
      } catch (e) {
        process.stderr.write(`${thing}: ${c.host_address}:${c.port}: ${e.message}\n`);
      }
    }
  }
  throw new Error(`${thing}: no discovered endpoint took the connection`);
}

async function relay(port, ca, pki, pub, sub, topic, payload) {
  const sub_answer = await discover(port, ca, pki, sub);
  const pub_answer = await discover(port, ca, pki, pub);
  const s = await connect(sub_answer, pki, sub);
  await new Promise((resolve, reject) =>
    s.subscribe(topic, { qos: 1 }, (err, granted) =>
      err ? reject(err)
        : granted[0].qos > 2 ? reject(new Error(`SUBACK refused ${topic}`)) : resolve()));
  const got = new Promise((resolve) => s.on('message', (t, p) => resolve([t, p.toString()])));
  const p = await connect(pub_answer, pki, pub);
  await new Promise((resolve, reject) =>
    p.publish(topic, payload, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
  const [t, text] = await got;
  process.stdout.write(`received ${t} ${text}\n`);
  p.end(true);
  s.end(true);
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  setTimeout(() => fail('timed out after 20 s'), 20000).unref();
  if (mode === 'discover' && args.length >= 4) {
    const [port, ca, pki, thing, path_thing] = args;
    const answer = await discover(port, ca, pki, thing, path_thing);
    process.stdout.write(`ok ${JSON.stringify(answer)}\n`);
  } else if (mode === 'relay' && args.length === 7) {
    await relay(...args);
  } else {
    process.stderr.write('usage: node gg_discovery.js discover PORT CA PKI THING [PATH_THING]\n'
      + '       node gg_discovery.js relay PORT CA PKI PUB SUB TOPIC PAYLOAD\n');
    process.exit(2);
  }
  process.exit(0);
}

main().catch(fail);
