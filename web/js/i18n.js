// Chinese and English for every page: from the browser's language, switchable, remembered.

const STRINGS = {
  zh: {
    brand: '课堂 Ketang',
    switchLang: 'English',
    // landing
    tagline: '城乡同步课堂：城市老师直播授课，乡村教室实时跟上',
    landingWhat: 'Ketang 是一个直播课堂中继服务器。城市老师在浏览器里上课（摄像头、麦克风、共享屏幕），乡村教室在投影电脑上实时收看。每个教室都会得到自己网络能承载的最好画面，声音始终不断。',
    landingHow: '如何开始',
    landingStep1: '教育局管理员打开管理页面，为一节课生成老师链接和各个教室的链接。',
    landingStep2: '老师打开老师链接，选择摄像头和麦克风，点击“开始上课”。',
    landingStep3: '每个乡村教室在投影电脑上打开自己的教室链接，点击一次“开始”。之后断网会自动重连。',
    landingAdmin: '启动服务器时，终端里会打印管理页面和示例课堂的链接。',
    // teacher
    studio: '老师工作台',
    camera: '摄像头',
    microphone: '麦克风',
    lessonTitle: '课程名称',
    subject: '科目',
    grade: '年级',
    startLesson: '开始上课',
    stopLesson: '结束上课',
    shareScreen: '共享屏幕',
    stopShare: '停止共享',
    mute: '静音',
    unmute: '取消静音',
    classrooms: '在线教室',
    noClassrooms: '还没有教室加入',
    recordingFailing: '这节课的录像写不进磁盘：课照常进行，请通知管理员。',
    uplink: '我的上行网络',
    bitrate: '码率',
    loss: '丢包',
    rtt: '延迟',
    notLive: '未开始',
    live: '直播中',
    connecting: '正在连接…',
    reconnecting: '网络中断，正在重新连接…',
    sharing: '正在共享屏幕',
    cameraError: '无法打开摄像头或麦克风',
    // classroom
    startWatching: '开始上课',
    startHint: '点击一次，全屏并打开声音',
    waiting: '等待老师开始上课',
    waitingHint: '老师开始后，画面会自动出现',
    ended: '本节课已结束',
    lowBandwidth: '低带宽模式',
    soundOff: '点击打开声音',
    quality: '画质',
    qualityGood: '良好',
    qualityFair: '一般',
    qualityPoor: '较差',
    offline: '已断开',
    // admin
    overview: '管理总览',
    liveRooms: '直播中的课堂',
    noRooms: '现在没有直播的课堂',
    teacher: '老师',
    sources: '画面来源',
    makeLinks: '生成课堂链接',
    room: '课堂编号',
    teacherName: '老师姓名',
    classroomNames: '教室名称（每行一个）',
    hours: '有效时长（小时）',
    create: '生成链接',
    library: '课程库',
    grafana: '质量监控 (Grafana)',
    copy: '复制',
    layer: '画面档位',
    freezes: '卡顿',
    state: '状态',
    download: '下载', downloadScreen: '下载屏幕共享', search: '搜索', searchHint: '课程名称、老师、科目、年级', noLessons: '没有找到课程', play: '播放', delete: '删除', school: '学校',
    st_new: '准备中', st_connecting: '连接中', st_connected: '已连接', st_disconnected: '网络中断', st_failed: '已失败', st_closed: '已关闭',
  },
  en: {
    brand: 'Ketang 课堂',
    switchLang: '中文',
    tagline: 'A city teacher teaches live; rural classrooms follow in real time',
    landingWhat: 'Ketang is a live-classroom relay. A city teacher teaches from a browser (camera, microphone, screen share); rural classrooms follow on a projector PC in real time. Each classroom gets the best picture its own link can carry, and never loses the sound.',
    landingHow: 'How to start',
    landingStep1: 'The county admin opens the admin page and makes a teacher link and one link per classroom for a lesson.',
    landingStep2: 'The teacher opens the teacher link, picks camera and microphone, and clicks "Start lesson".',
    landingStep3: 'Each rural classroom opens its own link on the projector PC and clicks "Start" once. It reconnects by itself after a network drop.',
    landingAdmin: 'When the server starts, the terminal prints links to the admin page and a demo lesson.',
    studio: 'Teacher studio',
    camera: 'Camera',
    microphone: 'Microphone',
    lessonTitle: 'Lesson title',
    subject: 'Subject',
    grade: 'Grade',
    startLesson: 'Start lesson',
    stopLesson: 'End lesson',
    shareScreen: 'Share screen',
    stopShare: 'Stop sharing',
    mute: 'Mute',
    unmute: 'Unmute',
    classrooms: 'Classrooms online',
    noClassrooms: 'No classroom has joined yet',
    recordingFailing: 'This lesson cannot be written to disk: teaching goes on, please tell the administrator.',
    uplink: 'My uplink',
    bitrate: 'Bitrate',
    loss: 'Loss',
    rtt: 'Delay',
    notLive: 'Not started',
    live: 'Live',
    connecting: 'Connecting…',
    reconnecting: 'Network lost, reconnecting…',
    sharing: 'Sharing the screen',
    cameraError: 'Cannot open the camera or microphone',
    startWatching: 'Start',
    startHint: 'One click: full screen, with sound',
    waiting: 'Waiting for the lesson to start',
    waitingHint: 'The picture appears by itself when the teacher starts',
    ended: 'The lesson has ended',
    lowBandwidth: 'Low bandwidth',
    soundOff: 'Click to turn the sound on',
    quality: 'Quality',
    qualityGood: 'Good',
    qualityFair: 'Fair',
    qualityPoor: 'Poor',
    offline: 'Disconnected',
    overview: 'Admin overview',
    liveRooms: 'Live lessons',
    noRooms: 'No lesson is live now',
    teacher: 'Teacher',
    sources: 'Sources',
    makeLinks: 'Make lesson links',
    room: 'Room',
    teacherName: 'Teacher name',
    classroomNames: 'Classroom names (one per line)',
    hours: 'Valid for (hours)',
    create: 'Make links',
    library: 'Library',
    grafana: 'Quality dashboards (Grafana)',
    copy: 'Copy',
    layer: 'Picture',
    freezes: 'Freezes',
    state: 'State',
    download: 'Download', downloadScreen: 'Download the screen share', search: 'Search', searchHint: 'Title, teacher, subject, grade', noLessons: 'No lessons found', play: 'Play', delete: 'Delete', school: 'School',
    st_new: 'new', st_connecting: 'connecting', st_connected: 'connected', st_disconnected: 'interrupted', st_failed: 'failed', st_closed: 'closed',
  },
};

const KEY = 'ketang.lang';

export function language() {
  const saved = localStorage.getItem(KEY);
  if (saved && STRINGS[saved]) return saved;
  return (navigator.language || 'zh').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export function t(key) {
  return STRINGS[language()][key] || STRINGS.en[key] || key;
}

/** Fill every [data-i18n] element's text (and [data-i18n-placeholder] placeholders). */
export function translate(root = document) {
  document.documentElement.lang = language() === 'zh' ? 'zh-CN' : 'en';
  root.querySelectorAll('[data-i18n]').forEach((el) => {
    el.textContent = t(el.dataset.i18n);
  });
  root.querySelectorAll('[data-i18n-placeholder]').forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
}

/** Wire a button that switches language; `onChange` re-renders dynamic text. */
export function languageSwitch(button, onChange = () => {}) {
  button.addEventListener('click', () => {
    localStorage.setItem(KEY, language() === 'zh' ? 'en' : 'zh');
    translate();
    onChange();
  });
}

/** The page's embedded config (room, role, name) written by the relay. */
export function pageConfig() {
  const el = document.getElementById('ketang-config');
  return el ? JSON.parse(el.textContent) : {};
}

export function token() {
  return new URLSearchParams(location.search).get('token') || '';
}
