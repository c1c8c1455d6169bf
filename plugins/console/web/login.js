// The login page: POST /api/login as JSON (the server refuses other content types, so a
// form on another site cannot log a browser in), then on to the console.
const form = document.getElementById('login-form');
const error = document.getElementById('login-error');

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  error.textContent = '';
  const body = {
    name: document.getElementById('login-name').value,
    password: document.getElementById('login-password').value,
  };
  try {
    const r = await fetch('/api/login', {
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
});
