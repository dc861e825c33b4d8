// Account screens: sign in, sign up, verify email, reset password. The last two
// call endpoints that may not exist on this server yet; a 404 says so plainly.

import { ApiError, request, signin, signup } from './api.js';
import { h, showMain } from './dom.js';

function field(id, label, attrs) {
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    h('input', { id, name: id, required: true, ...attrs }));
}

function form(titleText, fields, submitText, onSubmit, footer) {
  const status = h('p', { class: 'form-status', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'primary wide' }, submitText);
  const f = h('form', { class: 'card auth-card', novalidate: false },
    h('h1', {}, titleText), ...fields, status, button, footer);
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    status.className = 'form-status';
    status.textContent = '';
    try {
      const msg = await onSubmit(new FormData(f));
      if (msg) {
        status.className = 'form-status ok';
        status.textContent = msg;
      }
    } catch (err) {
      status.className = 'form-status error';
      status.textContent = describe(err);
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

function describe(err) {
  if (!(err instanceof ApiError)) return 'Something went wrong; please try again.';
  if (err.code === 'rate_limited') return `Too many attempts; try again in ${err.retryAfter ?? 'a few'} seconds.`;
  return err.message;
}

/** A 404 from an endpoint this server does not have yet. */
function unavailable(err, what) {
  if (err instanceof ApiError && err.status === 404 && /route/.test(err.message)) {
    throw new ApiError(404, 'not_found', `${what} is not available on this server yet.`);
  }
  throw err;
}

export function showSignin(mode) {
  const signingUp = mode === 'signup';
  const fields = [field('email', 'Email', { type: 'email', autocomplete: 'email' })];
  if (signingUp) {
    fields.push(field('username', 'Username', { autocomplete: 'username', minlength: 3, maxlength: 32, pattern: '[A-Za-z0-9_\\-]+' }));
  }
  fields.push(field('password', 'Password', {
    type: 'password', autocomplete: signingUp ? 'new-password' : 'current-password', minlength: signingUp ? 10 : 1,
  }));
  if (signingUp) fields.push(h('p', { class: 'hint' }, 'At least 10 characters; not your email or username.'));
  const footer = h('p', { class: 'auth-links' },
    signingUp
      ? [h('span', {}, 'Have an account? '), h('a', { href: '#/signin' }, 'Sign in')]
      : [h('a', { href: '#/signup', id: 'to-signup' }, 'Create an account'), ' · ', h('a', { href: '/reset-password' }, 'Forgot password?')]);
  const f = form(signingUp ? 'Create your account' : 'Sign in to Switchboard', fields,
    signingUp ? 'Sign up' : 'Sign in',
    async (d) => {
      if (signingUp) await signup(d.get('email').trim(), d.get('username').trim(), d.get('password'));
      else await signin(d.get('email').trim(), d.get('password'));
      location.hash = '#/';
    }, footer);
  f.id = signingUp ? 'signup-form' : 'signin-form';
  showMain(h('div', { class: 'center' }, f));
  f.querySelector('input').focus();
}

export function showVerifyEmail() {
  const token = new URLSearchParams(location.search).get('token');
  const status = h('p', { class: 'form-status', role: 'status' }, token ? 'Verifying…' : 'This link has no token.');
  showMain(h('div', { class: 'center' }, h('div', { class: 'card auth-card' },
    h('h1', {}, 'Verify your email'), status, h('p', {}, h('a', { href: '/' }, 'Continue to Switchboard')))));
  if (!token) return;
  request('POST', '/api/auth/verify-email', { token }, { auth: false })
    .catch((e) => unavailable(e, 'Email verification'))
    .then(() => {
      status.className = 'form-status ok';
      status.textContent = 'Your email is verified.';
    }, (e) => {
      status.className = 'form-status error';
      status.textContent = describe(e);
    });
}

export function showResetPassword() {
  const token = new URLSearchParams(location.search).get('token');
  const back = h('p', { class: 'auth-links' }, h('a', { href: '/' }, 'Back to sign in'));
  const f = token
    ? form('Choose a new password',
      [field('password', 'New password', { type: 'password', autocomplete: 'new-password', minlength: 10 })],
      'Set password',
      async (d) => {
        await request('POST', '/api/auth/password-reset/confirm', { token, password: d.get('password') }, { auth: false })
          .catch((e) => unavailable(e, 'Password reset'));
        return 'Your password is changed. You can sign in with it now.';
      }, back)
    : form('Reset your password',
      [field('email', 'Email', { type: 'email', autocomplete: 'email' })],
      'Send reset link',
      async (d) => {
        await request('POST', '/api/auth/password-reset/request', { email: d.get('email').trim() }, { auth: false })
          .catch((e) => unavailable(e, 'Password reset'));
        return 'If an account has this email, a reset link is on its way.';
      }, back);
  showMain(h('div', { class: 'center' }, f));
  f.querySelector('input').focus();
}
