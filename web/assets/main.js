// Boot and routing. Paths /verify-email and /reset-password are the pages emails
// link to; everything else is hash-routed: #/signin, #/signup, #/ (chats),
// #/chat/<id>, #/usage. One ChatSocket lives as long as the sign-in.

import { accessToken, getSession, onSession, refresh, signout } from './api.js';
import { $, h, showMain, toast } from './dom.js';
import { ChatSocket } from './socket.js';

const socket = new ChatSocket({ getToken: accessToken, refreshToken: () => refresh() });
let sidebar = null;
let unmount = null;

// --- connection state -------------------------------------------------------------
const conn = $('#conn');
let countdown = null;
socket.addEventListener('state', ({ detail }) => {
  clearInterval(countdown);
  conn.dataset.state = detail.state;
  const label = { idle: '', connecting: 'Connecting…', online: 'Online' };
  if (detail.state === 'offline') {
    const tickLabel = () => {
      const s = Math.max(0, Math.ceil((detail.retryAt - Date.now()) / 1000));
      conn.textContent = `Offline · retrying in ${s}s`;
    };
    tickLabel();
    countdown = setInterval(tickLabel, 1000);
  } else {
    conn.textContent = label[detail.state] ?? detail.state;
  }
});
socket.addEventListener('error', ({ detail }) => {
  if (!detail.chat_id && !['unauthorized'].includes(detail.code)) toast(detail.message, 'error');
});
socket.addEventListener('sendfailed', ({ detail }) => toast(`Not sent: ${detail.message}`, 'error'));

// --- theme ------------------------------------------------------------------------
const THEMES = ['system', 'light', 'dark'];
function applyTheme(t) {
  if (t === 'system') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
  $('#theme-btn').setAttribute('aria-label', `Theme: ${t} (change)`);
  $('#theme-btn').title = `Theme: ${t}`;
}
$('#theme-btn').addEventListener('click', () => {
  const now = localStorage.getItem('sb.theme') || 'system';
  const next = THEMES[(THEMES.indexOf(now) + 1) % THEMES.length];
  localStorage.setItem('sb.theme', next);
  applyTheme(next);
});
applyTheme(localStorage.getItem('sb.theme') || 'system');

// --- small screens: the chat list slides over ----------------------------------------
const menuBtn = $('#menu-btn');
const side = $('#sidebar');
function setMenu(open) {
  document.body.classList.toggle('menu-open', open);
  menuBtn.setAttribute('aria-expanded', String(open));
}
menuBtn.addEventListener('click', () => setMenu(!document.body.classList.contains('menu-open')));
side.addEventListener('click', (e) => {
  if (e.target.closest('a')) setMenu(false);
});

$('#signout-btn').addEventListener('click', () => signout());

// --- routing ----------------------------------------------------------------------
function signedInChrome(on) {
  for (const id of ['#topnav', '#menu-btn', '#conn', '#sidebar']) $(id).hidden = !on;
}

// Routing runs one at a time: a sign-in changes both the session and the hash.
let routing = Promise.resolve();
function route() {
  routing = routing.then(doRoute).catch((e) => showMain(h('p', { class: 'error' }, `Could not load: ${e.message}`)));
  return routing;
}

async function doRoute() {
  unmount?.();
  unmount = null;
  setMenu(false);
  const path = location.pathname;
  if (path === '/verify-email' || path === '/reset-password') {
    signedInChrome(false);
    const m = await import('./account.js');
    return path === '/verify-email' ? m.showVerifyEmail() : m.showResetPassword();
  }
  const hash = location.hash.replace(/^#/, '') || '/';
  if (!getSession()) {
    signedInChrome(false);
    socket.stop();
    const { showSignin } = await import('./account.js');
    return showSignin(hash === '/signup' ? 'signup' : 'signin');
  }
  signedInChrome(true);
  socket.start();
  if (!sidebar) {
    const { Sidebar } = await import('./sidebar.js');
    sidebar = new Sidebar(side, {});
    await sidebar.reload();
  }
  $('#nav-usage').setAttribute('aria-current', hash === '/usage' ? 'page' : 'false');
  if (hash === '/usage') {
    sidebar.select(null);
    const { showUsage } = await import('./usage.js');
    return showUsage();
  }
  const m = /^\/chat\/([0-9a-f-]{36})$/.exec(hash);
  if (m) return openChat(m[1]);
  sidebar.select(null);
  showMain(h('div', { class: 'center empty-state' },
    h('h1', {}, 'Start a conversation'),
    h('p', {}, 'Pick a chat on the left, or start a new one.'),
    h('button', { type: 'button', class: 'primary', id: 'start-chat', onclick: () => sidebar.create() }, '+ New chat')));
}

async function openChat(id) {
  sidebar.select(id);
  let chat = sidebar.find(id);
  if (!chat) {
    try {
      chat = await (await import('./api.js')).request('GET', `/api/chats/${id}`);
    } catch (e) {
      toast(e.status === 404 ? 'That chat does not exist (or was deleted).' : e.message, 'error');
      location.hash = '#/';
      return;
    }
  }
  const { mountChat } = await import('./chatview.js');
  unmount = mountChat($('#main'), { ...chat }, socket, { onTitle: (c) => sidebar.updated(c) });
}

let lastUser = getSession()?.user?.id ?? null;
onSession((s) => {
  const user = s?.user?.id ?? null;
  if (user === lastUser) return; // a token refresh: nothing to redraw
  lastUser = user;
  sidebar = null;
  socket.stop();
  route();
});
addEventListener('hashchange', route);
route();
