// The login page: POST /api/login as JSON (the server refuses other content types, so a
// form on another site cannot log a browser in), then on to the console. An operator
// whose browser holds a client certificate of an account logs in with it instead
// (POST /api/login/certificate).
const form = document.getElementById('login-form');
const error = document.getElementById('login-error');

async function login(path, body) {
  error.textContent = '';
  try {
    const r = await fetch(path, {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(body),
      credentials: 'same-origin',
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) {
      error.textContent = j.error || `login failed (${r.status})`;
      return;
    }
    location.href = '/';
  } catch (e) {
    error.textContent = `cannot reach the console: ${e.message}`;
  }
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  login('/api/login', {
    name: document.getElementById('login-name').value,
    password: document.getElementById('login-password').value,
  });
});
document.getElementById('login-certificate').addEventListener('click', () => login('/api/login/certificate', {}));
