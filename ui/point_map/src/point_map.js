// The Embedding space tab's WebGL point map (see ui/webgl_map.py for the Python side).
//
// The component's value is a small JSON view; the points (float32 x, float32 y, uint8 kind per point) and the
// colouring (uint8 or uint16 category per point) are binary arrays fetched by URL, each once. regl-scatterplot
// draws them with density-based opacity where points overlap; hover asks the server for a point's details, click
// fires the component's click event, shift-drag lassos. Labels at cluster centres, the numbers of search results and
// density contours are HTML / SVG overlays kept in place on every pan and zoom.
import createScatterplot from 'regl-scatterplot';
import { scaleLinear } from 'd3-scale';

const states = new WeakMap();
const MAX_LEGEND = 80;

async function fetchBytes(url) {
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

function create(element, server, trigger) {
  const canvas = element.querySelector('.pm-canvas');
  const xScale = scaleLinear().domain([-1, 1]);
  const yScale = scaleLinear().domain([-1, 1]);
  const scatterplot = createScatterplot({
    canvas, xScale, yScale, pointSize: 3, opacityBy: 'density', backgroundColor: [1, 1, 1, 1],
    pointColorHover: [0, 0, 0, 1], pointColorActive: [0.85, 0, 0, 1], pointOutlineWidth: 2, pointSizeSelected: 3,
    lassoColor: [0.1, 0.4, 0.9, 1],
  });
  const state = { canvas, scatterplot, xScale, yScale, view: null, pointsUrl: null, coloursUrl: null, n: 0 };
  const tip = element.querySelector('.pm-tip');
  const thumb = element.querySelector('.pm-thumb');
  const caption = element.querySelector('.pm-caption');
  scatterplot.subscribe('pointover', async (index) => {
    const id = String(index);
    tip.dataset.point = id;
    caption.textContent = `point ${id}`;
    thumb.style.display = 'none';
    const answer = await server.map_point(state.view.token + ':' + id);
    if (tip.dataset.point !== id || !answer) return;  // the pointer has moved on
    if (answer.src) { thumb.src = answer.src; thumb.style.display = 'block'; }
    if (answer.text) caption.textContent = answer.text;
    tip.dataset.answered = id;
  });
  scatterplot.subscribe('select', ({ points }) => {
    element.dataset.selected = String(points.length);
    if (points.length === 1) { trigger('click', { point: Number(points[0]) }); return; }
    setStatus(element, state, `${points.length.toLocaleString()} points selected (lasso)`);
    trigger('select', { points: Array.from(points, Number) });
  });
  scatterplot.subscribe('deselect', () => {
    element.dataset.selected = '0';
    trigger('select', { points: [] });
  });
  scatterplot.subscribe('view', () => placeOverlays(element, state));
  return state;
}

function setStatus(element, state, extra) {
  const view = state.view;
  const line = `${state.n.toLocaleString()} points drawn with WebGL (regl-scatterplot, opacity by density)`;
  element.querySelector('.pm-status').textContent = [line, view && view.note, extra].filter(Boolean).join(' · ');
}

function legend(element, view) {
  const box = element.querySelector('.pm-legend');
  box.replaceChildren();
  const entries = view.legend || [];
  for (const [name, colour] of entries.slice(0, MAX_LEGEND)) {
    const row = document.createElement('div');
    const swatch = document.createElement('span');
    swatch.className = 'pm-swatch';
    swatch.style.background = colour;
    row.append(swatch, document.createTextNode(name));
    row.title = name;
    box.append(row);
  }
  if (entries.length > MAX_LEGEND) {
    const more = document.createElement('div');
    more.textContent = `… and ${entries.length - MAX_LEGEND} more groups`;
    box.append(more);
  }
}

function overlays(element, state) {
  const view = state.view;
  const labels = element.querySelector('.pm-labels');
  labels.replaceChildren();
  state.labelNodes = (view.labels || []).map((label) => {
    const node = document.createElement('div');
    node.className = 'pm-label';
    node.textContent = label.text;
    node.title = label.title || label.text;
    labels.append(node);
    return [node, label.x, label.y];
  });
  state.rankNodes = (view.highlight || []).map((index, rank) => {
    const node = document.createElement('div');
    node.className = 'pm-rank';
    node.textContent = String(rank + 1);
    labels.append(node);
    return [node, index];
  });
  const svg = element.querySelector('.pm-svg');
  svg.replaceChildren();
  state.contourNodes = (view.contours || []).map((line) => {
    const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', 'rgba(60,60,60,0.55)');
    path.setAttribute('stroke-width', '1');
    svg.append(path);
    return [path, line.x, line.y];
  });
  placeOverlays(element, state);
}

function placeOverlays(element, state) {
  if (!state.labelNodes) return;
  const { xScale, yScale, points } = state;
  for (const [node, x, y] of state.labelNodes) {
    node.style.left = `${xScale(x)}px`;
    node.style.top = `${yScale(y)}px`;
  }
  for (const [node, index] of state.rankNodes) {
    node.style.left = `${xScale(points.x[index])}px`;
    node.style.top = `${yScale(points.y[index])}px`;
  }
  for (const [path, xs, ys] of state.contourNodes) {
    let d = '';
    for (let i = 0; i < xs.length; i += 1) d += `${i ? 'L' : 'M'}${xScale(xs[i]).toFixed(1)},${yScale(ys[i]).toFixed(1)}`;
    path.setAttribute('d', d);
  }
}

export async function render(element, valueJson, server, trigger) {
  let view;
  try { view = JSON.parse(valueJson); } catch (error) { return; }
  const empty = element.querySelector('.pm-empty');
  let state = states.get(element);
  if (state && state.canvas !== element.querySelector('.pm-canvas')) {  // the template was drawn anew
    state.scatterplot.destroy();
    state = null;
  }
  if (!state) {
    state = create(element, server, trigger);
    states.set(element, state);
  }
  state.view = view;
  const started = performance.now();
  try {
    if (state.pointsUrl !== view.points_url) {
      const buffer = await fetchBytes(view.points_url);
      const n = buffer.byteLength / 9;
      state.points = { x: new Float32Array(buffer, 0, n), y: new Float32Array(buffer, 4 * n, n),
                       kinds: new Uint8Array(buffer, 8 * n, n) };
      state.n = n;
      state.pointsUrl = view.points_url;
      state.coloursUrl = null;
    }
    if (state.coloursUrl !== view.colours_url) {
      const buffer = await fetchBytes(view.colours_url);
      const codes = view.colour_bytes === 2 ? new Uint16Array(buffer) : new Uint8Array(buffer);
      state.codes = Float32Array.from(codes);
      state.coloursUrl = view.colours_url;
    }
    if (state.filterUrl !== view.filter_url) {
      state.shown = null;
      if (view.filter_url) {
        const mask = new Uint8Array(await fetchBytes(view.filter_url));
        const shown = [];
        for (let i = 0; i < mask.length; i += 1) if (mask[i]) shown.push(i);
        state.shown = shown;
      }
      state.filterUrl = view.filter_url;
    }
  } catch (error) {
    element.querySelector('.pm-status').textContent = `The map could not be fetched: ${error.message}`;
    return;
  }
  if (empty) empty.remove();
  element.querySelector('.pm-title').textContent = view.title || '';
  const { scatterplot, points } = state;
  const kinds = Float32Array.from(points.kinds);
  scatterplot.set({
    pointColor: (view.legend || []).map(([, colour]) => colour).concat(['#888888']),
    colorBy: 'valueA', sizeBy: 'valueB', pointSize: view.sizes || [3, 6, 8],
  });
  await scatterplot.draw({ x: points.x, y: points.y, z: state.codes, w: kinds },
    { zDataType: 'categorical', wDataType: 'categorical' });
  if (view.texts_first) {  // images drawn last, so no text marker hides them
    const order = [];
    for (let i = 0; i < state.n; i += 1) if (points.kinds[i] > 0) order.push(i);
    for (let i = 0; i < state.n; i += 1) if (points.kinds[i] === 0) order.push(i);
    scatterplot.set({ pointOrder: order });
  }
  if (state.shown) await scatterplot.filter(state.shown, { preventEvent: true });
  else await scatterplot.unfilter({ preventEvent: true });
  scatterplot.select(view.highlight || [], { preventEvent: true });
  legend(element, view);
  overlays(element, state);
  element.dataset.drawnPoints = String(state.n);
  element.dataset.shownPoints = String(state.shown ? state.shown.length : state.n);
  element.dataset.drawMs = String(Math.round(performance.now() - started));
  element.dataset.view = view.points_url + '|' + view.colours_url + '|' + (view.highlight || []).join(',');
  setStatus(element, state);
}

// The page position of point ``index`` (for tests and for callers that point at a point).
export function screenPosition(element, index) {
  const state = states.get(element);
  if (!state) return null;
  const box = state.canvas.getBoundingClientRect();
  const [x, y] = state.scatterplot.getScreenPosition(index);
  return [box.left + x, box.top + y];
}
