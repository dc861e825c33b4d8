// The chat list: newest first, paged with the server's cursor; new, rename,
// delete. Other tabs hear of changes over a BroadcastChannel and reload.

import { request } from './api.js';
import { h, toast } from './dom.js';

const PAGE = 30;
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('sb.chats') : null;

export class Sidebar {
  constructor(root, { onOpen }) {
    this.root = root;
    this.onOpen = onOpen;
    this.chats = [];
    this.cursor = null;
    this.current = null;
    this.list = h('ul', { class: 'chat-list', id: 'chat-list' });
    this.more = h('button', { type: 'button', class: 'link-btn', id: 'more-chats', hidden: true, onclick: () => this.loadMore() }, 'Load more');
    root.replaceChildren(
      h('div', { class: 'sidebar-head' },
        h('h2', { class: 'sr-only' }, 'Chats'),
        h('button', { type: 'button', class: 'primary wide', id: 'new-chat', onclick: () => this.create() }, '+ New chat')),
      h('nav', { 'aria-label': 'Chat list' }, this.list, this.more));
    channel?.addEventListener('message', () => this.reload());
  }

  announce() {
    channel?.postMessage('changed');
  }

  async reload() {
    try {
      const page = await request('GET', `/api/chats?limit=${Math.max(PAGE, this.chats.length)}`);
      this.chats = page.chats;
      this.cursor = page.next_cursor;
      this.paint();
    } catch (e) {
      if (e.status !== 401) toast(`Could not load chats: ${e.message}`, 'error');
    }
  }

  async loadMore() {
    if (!this.cursor) return;
    const page = await request('GET', `/api/chats?limit=${PAGE}&before=${this.cursor}`);
    this.chats.push(...page.chats);
    this.cursor = page.next_cursor;
    this.paint();
  }

  async create() {
    try {
      const chat = await request('POST', '/api/chats', {});
      this.chats.unshift(chat);
      this.paint();
      this.announce();
      location.hash = `#/chat/${chat.id}`;
    } catch (e) {
      toast(`Could not create a chat: ${e.message}`, 'error');
    }
  }

  async rename(chat) {
    const title = prompt('Rename chat', chat.title);
    if (title == null || !title.trim()) return;
    try {
      this.updated(await request('PATCH', `/api/chats/${chat.id}`, { title: title.trim() }));
    } catch (e) {
      toast(`Could not rename: ${e.message}`, 'error');
    }
  }

  async remove(chat) {
    if (!confirm(`Delete "${chat.title}" and all its messages?`)) return;
    try {
      await request('DELETE', `/api/chats/${chat.id}`);
      this.chats = this.chats.filter((c) => c.id !== chat.id);
      this.paint();
      this.announce();
      if (this.current === chat.id) location.hash = '#/';
    } catch (e) {
      toast(`Could not delete: ${e.message}`, 'error');
    }
  }

  /** A chat changed elsewhere in this tab (renamed by the chat view). */
  updated(chat) {
    const i = this.chats.findIndex((c) => c.id === chat.id);
    if (i >= 0) this.chats[i] = chat;
    this.paint();
    this.announce();
    this.onTitle?.(chat);
  }

  select(id) {
    this.current = id;
    this.paint();
  }

  find(id) {
    return this.chats.find((c) => c.id === id);
  }

  paint() {
    this.list.replaceChildren(...this.chats.map((c) => h('li', { class: c.id === this.current ? 'active' : '' },
      h('a', { href: `#/chat/${c.id}`, 'aria-current': c.id === this.current ? 'page' : null, dataset: { chatId: c.id } }, c.title),
      h('span', { class: 'row-actions' },
        h('button', { type: 'button', class: 'icon-btn small', 'aria-label': `Rename ${c.title}`, onclick: () => this.rename(c) }, '✎'),
        h('button', { type: 'button', class: 'icon-btn small', 'aria-label': `Delete ${c.title}`, onclick: () => this.remove(c) }, '×')))));
    if (this.chats.length === 0) this.list.append(h('li', { class: 'empty' }, 'No chats yet'));
    this.more.hidden = !this.cursor;
  }
}
