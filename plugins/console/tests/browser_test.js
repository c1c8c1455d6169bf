// The console in Debian's chromium (puppeteer-core), as an operator uses it: refused and
// accepted logins, the plugins of the running groved and a hot reload, a device's message
// watched live, a publish reaching a device, a shadow edited with a version conflict, a
// page for a plugin not in the image, then function_runtime and deployment loaded from the
// plugins page: a function invoked with its log followed live, a deployment's detail with
// its component's state and a failed one's last error; a POST without the CSRF token
// refused, and logout.
// Prints PASS:/FAIL: lines (browser_test.sh counts them); screenshots go to CONSOLE_OUT.
// Environment: CONSOLE_URL, CONSOLE_PASSWORD, CONSOLE_SPKI (the server key's pin),
// CONSOLE_OUT, MQTT_PORT, PKI (the group PKI), B_OUT (device B's mosquitto_sub output),
// FR_CONFIG / DEP_CONFIG (what the plugins page loads), DEPLOY_SCRIPT (makes two
// deployments once deployment runs; prints {"good", "bad"} ids).

'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const {execFileSync} = require('child_process');
const puppeteer = require('puppeteer-core');

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const url = env('CONSOLE_URL');
const out = env('CONSOLE_OUT');
const pki = env('PKI');
let failed = 0;

function check(what, ok, detail = '') {
  console.log(`${ok ? 'PASS' : 'FAIL'}: ${what}${ok || !detail ? '' : ` (${detail})`}`);
  if (!ok) failed++;
}

// Runs `fn`; a thrown error (a selector that never appeared) is a failed check, not the end.
async function step(what, fn) {
  try {
    await fn();
  } catch (e) {
    check(what, false, e.message.split('\n')[0]);
  }
}

function devicePublish(thing, topic, file) {
  execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', env('MQTT_PORT'), '-V', '5',
    '--cafile', `${pki}/ca.crt`, '--cert', `${pki}/devices/${thing}.crt`, '--key', `${pki}/devices/${thing}.key`,
    '-i', `${thing}-pub-${process.pid}`, '-t', topic, '-f', file], {timeout: 10000});
}

const text = (page, sel) => page.$eval(sel, (el) => el.textContent);
const waitText = (page, sel, needle, timeout = 15000) => page.waitForFunction(
  (s, n) => document.querySelector(s)?.textContent.includes(n), {timeout, polling: 100}, sel, needle);

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'grove-console-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: profile,
    args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${env('CONSOLE_SPKI')}`,
           '--window-size=1280,900'],
    defaultViewport: {width: 1280, height: 900},
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const shot = (name) => page.screenshot({path: path.join(out, `${name}.png`), fullPage: true});

    // No session: the console sends the browser to the login page.
    await page.goto(`${url}/`, {waitUntil: 'networkidle0'});
    check('without a session the console shows the login page', page.url() === `${url}/login.html`, page.url());

    await step('a wrong password is refused', async () => {
      await page.type('#login-name', 'alice');
      await page.type('#login-password', 'not the password');
      await page.click('#login-submit');
      await waitText(page, '#login-error', 'wrong name or password');
      check('a wrong password is refused on the login page', page.url() === `${url}/login.html`);
      await shot('login-refused');
    });

    await step('the right password logs in', async () => {
      await page.$eval('#login-password', (el) => { el.value = ''; });
      await page.type('#login-password', env('CONSOLE_PASSWORD'));
      await Promise.all([page.waitForNavigation({waitUntil: 'domcontentloaded'}), page.click('#login-submit')]);
      await waitText(page, '#who', 'alice');
      check('the right password logs in', page.url().startsWith(`${url}/`) && !page.url().includes('login'));
    });

    await step('the overview shows groved live', async () => {
      await page.waitForSelector('#groved-version', {timeout: 15000});
      await waitText(page, '#overview-group', 'console-e2e');
      // A few status rounds, so the sparklines have points.
      await page.waitForFunction(() => document.querySelectorAll('.spark polyline[points*=","]').length > 0,
                                 {timeout: 15000, polling: 200});
      await page.click('#overview-plugins details[data-plugin="message_manager"] summary');
      await new Promise((r) => setTimeout(r, 1500)); // survives the next live update
      const open = await page.$eval('#overview-plugins details[data-plugin="message_manager"]', (d) => d.open);
      check('an opened plugin\'s counters stay open across live updates', open);
      const version = await text(page, '#groved-version');
      check('the overview shows groved\'s version, the group and sparklines', version.length > 0, version);
      await shot('overview');
    });

    await step('the plugins page lists the running plugins', async () => {
      await page.goto(`${url}/#plugins`);
      await page.waitForSelector('#plugin-shadow', {timeout: 15000});
      const rows = await page.$$eval('#plugin-rows tr', (trs) => trs.map((tr) => tr.id));
      check('the plugins page lists message_manager, shadow and console',
            ['plugin-message_manager', 'plugin-shadow', 'plugin-console'].every((r) => rows.includes(r)), rows.join(' '));
      const running = await text(page, '#plugin-shadow .state');
      check('shadow is running', running === 'running', running);
    });

    await step('reloading shadow changes its last_reload', async () => {
      const before = await text(page, '#last-reload-shadow');
      await page.click('#reload-shadow');
      await waitText(page, '#plugin-result', 'reloaded shadow', 30000);
      await page.waitForFunction((b) => {
        const t = document.querySelector('#last-reload-shadow')?.textContent;
        return t && t !== b && t !== '—';
      }, {timeout: 15000, polling: 200}, before);
      const after = await text(page, '#last-reload-shadow');
      check('reload: the result is shown and last_reload changed', after !== before, `${before} -> ${after}`);
      await shot('plugins');
    });

    await step('a reload from a missing .so shows the error', async () => {
      await page.type('#reload-path-shadow', '/nonexistent/libshadow.so');
      await page.click('#reload-shadow');
      await waitText(page, '#plugin-result', 'grovectl:', 30000);
      const r = await text(page, '#plugin-result');
      check('a reload from a missing file shows the error as grovectl does', r.toLowerCase().includes('no such file'), r);
    });

    await step('a device message appears live', async () => {
      await page.goto(`${url}/#messages`);
      await page.waitForSelector('#sub-filter');
      await page.$eval('#sub-filter', (el) => { el.value = ''; });
      await page.type('#sub-filter', '$grove/mm/out/function/#');
      await page.click('#sub-submit');
      await waitText(page, '#sub-state', 'watching');
      const json = path.join(os.tmpdir(), `console-a-${process.pid}.json`);
      fs.writeFileSync(json, JSON.stringify({temperature: 21.5, unit: 'C'}));
      devicePublish('A', 'a/to/f/temp', json);
      await waitText(page, '#messages', 'a/to/f/temp');
      const shown = await text(page, '#messages');
      check('a mosquitto_pub message from device A appears, JSON pretty-printed',
            shown.includes('"temperature": 21.5') && shown.includes('device:A'), shown.slice(0, 200));
      const bin = path.join(os.tmpdir(), `console-a-${process.pid}.bin`);
      fs.writeFileSync(bin, Buffer.from([0, 1, 2, 0xfe, 0xff]));
      devicePublish('A', 'a/to/f/raw', bin);
      await waitText(page, '#messages', '00 01 02 fe ff');
      check('a binary payload is shown as hex', true);
      fs.rmSync(json, {force: true});
      fs.rmSync(bin, {force: true});
    });

    await step('a publish reaches device B', async () => {
      await page.type('#pub-topic', 'f/to/b');
      await page.$eval('#pub-source', (el) => { el.value = ''; });
      await page.type('#pub-source', 'function:F');
      await page.type('#pub-payload', 'hello B from the console');
      await page.click('#pub-submit');
      await waitText(page, '#pub-result', 'routed to');
      let got = '';
      for (let i = 0; i < 100 && !got.includes('hello B from the console'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        got = fs.readFileSync(env('B_OUT'), 'utf8');
      }
      check('the publish is routed and device B receives it', got.includes('hello B from the console'), got);
      await shot('messages');
      // A source the console's profile entry does not grant: refused, and said so.
      await page.$eval('#pub-source', (el) => { el.value = ''; });
      await page.type('#pub-source', 'device:A');
      await page.click('#pub-submit');
      await waitText(page, '#pub-result', 'not');
      const r = await text(page, '#pub-result');
      check('a source outside may_claim is refused and shown', /authoriz|grant|not allowed/i.test(r), r);
      // A topic no subscription takes: no route.
      await page.$eval('#pub-source', (el) => { el.value = ''; });
      await page.type('#pub-source', 'function:F');
      await page.$eval('#pub-topic', (el) => { el.value = ''; });
      await page.type('#pub-topic', 'nobody/listens');
      await page.click('#pub-submit');
      await waitText(page, '#pub-result', 'no route');
      check('a topic nobody takes shows "no route"', true);
    });

    await step('shadows: an update and a version conflict', async () => {
      // A publish the group's table does not allow A: counted against A.
      const denied = path.join(os.tmpdir(), `console-denied-${process.pid}`);
      fs.writeFileSync(denied, 'not for anyone');
      devicePublish('A', 'no/route/for/a', denied);
      fs.rmSync(denied, {force: true});
      await page.goto(`${url}/#devices`);
      await page.waitForSelector('#shadow-thing');
      await page.waitForFunction(() => document.querySelector('#device-A td:nth-child(4)')?.textContent === '1',
                                 {timeout: 15000, polling: 200});
      check('the devices page lists A and B with A\'s denied publish counted',
            (await page.$$('#device-A')).length === 1 && (await page.$$('#device-B')).length === 1);
      // B's mosquitto_sub is connected for the whole test; A's mosquitto_pub has left.
      await page.waitForFunction(() => document.querySelector('#device-B td.connected')?.textContent === 'yes' &&
                                 document.querySelector('#device-A td.connected')?.textContent === 'no',
                                 {timeout: 15000, polling: 200});
      check('the devices page shows B connected and A not', true);
      await page.type('#shadow-thing', 'A');
      await page.$eval('#shadow-doc', (el) => { el.value = '{"state": {"desired": {"on": true}}}'; });
      await page.$$eval('button', (bs) => bs.find((b) => b.textContent === 'Update').click());
      await waitText(page, '#shadow-result', 'version');
      const first = await text(page, '#shadow-result');
      check('a shadow update through the console is accepted', /^version \d+/.test(first), first);
      await page.$eval('#shadow-doc', (el) => { el.value = '{"state": {"desired": {"on": false}}, "version": 999}'; });
      await page.$$eval('button', (bs) => bs.find((b) => b.textContent === 'Update').click());
      await waitText(page, '#shadow-result', '409');
      check('a stale version is shown as a 409 conflict', (await text(page, '#shadow-result')).includes('conflict'));
      await shot('shadows');
    });

    await step('a plugin not in the image', async () => {
      await page.goto(`${url}/#functions`);
      await waitText(page, '#page-function_runtime', 'not in this image');
      check('the functions page says function_runtime is not in this image', true);
      await page.goto(`${url}/#deployments`);
      await waitText(page, '#page-deployment', 'not in this image');
      check('the deployments page says deployment is not in this image', true);
    });

    // Both plugins loaded from the plugins page (name and config), as an operator would.
    const load = async (name, config) => {
      await page.goto(`${url}/#plugins`);
      await page.waitForSelector('#load-name');
      // The form stays from the previous load (same page): its fields set, not typed into.
      await page.$eval('#load-name', (el, n) => { el.value = n; }, name);
      await page.$eval('#load-config', (el, c) => { el.value = c; }, config);
      await page.click('#load-submit');
      // Done when the request is answered (the click replaced the last result with
      // "load <name>…"): "loaded <name>" or the error, whatever it names.
      const done = await page.waitForFunction((n) => {
        const t = document.querySelector('#plugin-result')?.textContent ?? '';
        return t !== '' && t !== `load ${n}\u2026`;
      }, {timeout: 90000, polling: 200}, name).then(() => true, () => false);
      const r = await text(page, '#plugin-result');
      if (!done) console.log(`the load of ${name} is unanswered after 90 s; the page shows: ${r}`);
      check(`${name} loaded from the plugins page`, r.startsWith(`loaded ${name}`), r);
    };
    await step('function_runtime loaded from the plugins page', () => load('function_runtime', env('FR_CONFIG')));
    await step('deployment loaded from the plugins page', () => load('deployment', env('DEP_CONFIG')));

    await step('the functions page: a function, an invoke and its log', async () => {
      await page.goto(`${url}/#functions`);
      await page.waitForSelector('#function-echo', {timeout: 20000});
      // The pinned Python instance up: one instance.
      await page.waitForFunction(() => document.querySelector('#function-echo td:nth-child(3)')?.textContent.startsWith('1/'),
                                 {timeout: 30000, polling: 200});
      check('the functions page lists echo (pinned, its instance running)',
            (await text(page, '#function-echo td:nth-child(2)')) === 'pinned');
      await page.select('#fn-name', 'echo');
      await page.$eval('#fn-payload', (el) => { el.value = '{"n": 42}'; });
      await page.click('#fn-invoke');
      await waitText(page, '#fn-result', 'answered', 30000);
      const r = await text(page, '#fn-result');
      check('an invoke shows the function\'s reply', r.includes('"by": "console_fn"') && r.includes('"n": 42'), r);
      await page.waitForFunction(() => document.querySelector('#function-echo td:nth-child(5)')?.textContent === '1',
                                 {timeout: 15000, polling: 200});
      check('... and its invocation is counted', true);
      const dropped = await text(page, '#function-echo td:nth-child(10)');
      check('... with its output lines dropped (as grovectl functions): none', dropped === '0', dropped);
      await page.click('#function-echo button');
      await waitText(page, '#fn-log', 'console_fn got {"n": 42}');
      check('the log tail shows what the invoke printed', true);
      await page.click('#fn-follow');
      await waitText(page, '#fn-follow-state', 'following live');
      await page.$eval('#fn-payload', (el) => { el.value = '{"n": 43}'; });
      await page.click('#fn-invoke');
      await waitText(page, '#fn-log', 'console_fn got {"n": 43}', 20000);
      check('following the log shows the next invoke\'s line live', true);
      await shot('functions');
    });

    await step('the deployments page: list, detail, installed components', async () => {
      const ids = JSON.parse(execFileSync('bash', [env('DEPLOY_SCRIPT')], {timeout: 60000}).toString());
      await page.goto(`${url}/#deployments`);
      await page.waitForSelector(`#deployment-${ids.bad}`, {timeout: 20000});
      check('the deployments page lists both deployments', (await page.$$(`#deployment-${ids.good}`)).length === 1);
      await page.click(`#deployment-${ids.good} button`);
      await page.waitForSelector('[id="detail-component-console.Hello"]', {timeout: 15000});
      await waitText(page, '#detail-execution', 'SUCCEEDED');
      const st = await page.$eval('[id="detail-component-console.Hello"] td:nth-child(4)', (el) => el.textContent);
      check('the detail shows console.Hello with its state on the core', ['FINISHED', 'RUNNING'].includes(st), st);
      await page.waitForSelector('[id="installed-console.Hello"]');
      check('console.Hello is listed as installed', true);
      await shot('deployments');
      await page.click(`#deployment-${ids.bad} button`);
      await waitText(page, '#detail-status', 'FAILED');
      await waitText(page, '#detail-reason', 'resolution');
      check('a failed deployment\'s detail shows its last error', (await text(page, '#detail-reason')).length > 0,
            await text(page, '#detail-reason'));
      const missing = await page.$eval('[id="detail-component-console.Missing"] td:nth-child(3)', (el) => el.textContent);
      check('... and its component not installed', missing === 'not installed', missing);
      await shot('deployment-failed');
    });

    await step('a POST without the CSRF token is refused', async () => {
      const status = await page.evaluate(async () => (await fetch('/api/plugins/unload', {
        method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'shadow'}),
      })).status);
      check('a POST with the session cookie but without the CSRF token is refused 403', status === 403, status);
    });

    await step('logout ends the session', async () => {
      await Promise.all([page.waitForNavigation(), page.click('#logout')]);
      const status = await page.evaluate(async () => (await fetch('/api/status')).status);
      check('after logout the API answers 401', status === 401, status);
    });
    check('no script errors on the pages', errors.length === 0, errors.join('; '));
  } finally {
    await browser.close();
    fs.rmSync(profile, {recursive: true, force: true});
  }
}

main().then(() => process.exit(failed ? 1 : 0), (e) => {
  console.log(`FAIL: ${e.stack}`);
  process.exit(1);
});
