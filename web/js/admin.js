// Admin overview: live rooms with their teacher, sources and classrooms' quality, refreshed
// every few seconds; a form that makes teacher and classroom links for a room.
import {grade} from './client.js';
import {languageSwitch, pageConfig, t, token, translate} from './i18n.js';

const config = pageConfig();
const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
const headers = {Authorization: `Bearer ${token()}`};
let rooms = [];

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function roomCard(room) {
  const card = document.createElement('div');
  card.className = 'room-card';
  card.dataset.room = room.room;
  const title = document.createElement('h3');
  const pill = document.createElement('span');
  pill.className = `pill ${room.live ? 'live' : ''}`;
  pill.textContent = t(room.live ? 'live' : 'notLive');
  const lesson = [room.lesson.title, room.lesson.subject, room.lesson.grade].filter(Boolean).join(' · ');
  title.append(room.room, pill);
  const sources = document.createElement('p');
  sources.className = 'muted';
  const teacher = room.sources[0]?.teacher || '–';
  const list = room.sources.map((s) => `${s.source} ${Math.round(s.bitrate / 1000)} kbps`).join(', ') || '–';
  sources.textContent = `${lesson ? lesson + ' — ' : ''}${t('teacher')}: ${teacher} · ${t('sources')}: ${list}`;
  const table = document.createElement('table');
  const head = document.createElement('tr');
  for (const key of ['classrooms', 'state', 'layer', 'loss', 'rtt', 'freezes', 'quality']) {
    const th = document.createElement('th');
    th.textContent = t(key);
    head.append(th);
  }
  table.append(head);
  for (const c of room.classrooms) {
    const row = document.createElement('tr');
    const qoe = c.qoe || {};
    const level = c.state === 'connected' ? grade(qoe, null) || 3 : 0;
    row.append(
      cell(c.name), cell(t(`st_${c.state}`)), cell(c.layers.join('/') || '–'), cell(`${(100 * c.loss).toFixed(1)}%`),
      cell(`${Math.round(1000 * c.rtt)} ms`), cell(qoe.freezeCount !== undefined ? `${qoe.freezeCount} / ${qoe.totalFreezesDuration.toFixed(1)} s` : '–'),
      cell(t(['offline', 'qualityPoor', 'qualityFair', 'qualityGood'][level])),
    );
    table.append(row);
  }
  card.append(title, sources);
  if (room.recording?.state === 'failing') {
    const warning = document.createElement('p');
    warning.className = 'notice warn';
    warning.setAttribute('role', 'alert');
    warning.textContent = `${t('recordingFailing')} (${room.recording.problem})`;
    card.append(warning);
  }
  card.append(table);
  return card;
}

function render() {
  $('rooms').replaceChildren(...rooms.map(roomCard));
  $('no-rooms').classList.toggle('hidden', rooms.length > 0);
}

async function refresh() {
  const response = await fetch('/api/rooms', {headers});
  if (response.ok) rooms = (await response.json()).rooms;
  render();
}

async function makeLinks(event) {
  event.preventDefault();
  $('links-error').textContent = '';
  const body = {
    room: $('room').value.trim(),
    teacher: $('teacher-name').value.trim(),
    classrooms: $('classroom-names').value.split('\n').map((n) => n.trim()).filter(Boolean),
    hours: Number($('hours').value),
  };
  const response = await fetch('/api/links', {method: 'POST', headers: {...headers, 'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const reply = await response.json();
  if (!response.ok) {
    $('links-error').textContent = reply.error;
    return;
  }
  const entries = [[`${t('teacher')}: ${reply.teacher.name}`, reply.teacher.url],
    ...reply.classrooms.map((c) => [c.name, c.url])];
  $('links').replaceChildren(...entries.map(([label, url]) => {
    const item = document.createElement('li');
    const link = document.createElement('a');
    link.href = url;
    link.target = '_blank';
    link.textContent = label;
    const code = document.createElement('code');
    code.textContent = url;
    item.append(link, code);
    return item;
  }));
}

translate();
languageSwitch($('lang'), render);
if (config.grafana) {
  $('grafana-link').href = config.grafana;
  $('grafana-link').classList.remove('hidden');
}
$('library-link').href = `/library?token=${encodeURIComponent(token())}`;
$('links-form').addEventListener('submit', (event) => makeLinks(event).catch((e) => ($('links-error').textContent = e.message)));
refresh();
setInterval(() => refresh().catch(() => {}), REFRESH_MS);
