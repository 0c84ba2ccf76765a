// ComfyUI-LatentSync frontend extension: shows on the node how many frames had a face, and warns (on the node and in
// a toast) when some frames had none - those frames are passed through unchanged by the pack.
//
// The nodes return a `ui` payload `{latentsync_faces: [{frames, with_face, without_face, missing_frames, warning}]}`;
// ComfyUI hands it to `onExecuted` when the node has run.
import { app } from "../../../scripts/app.js";

const REPORTING_NODES = new Set([
  "LatentSyncDetectFaces",
  "LatentSyncPasteFaces",
  "LatentSyncLipSyncVideo",
  "LatentSyncLipSyncImages",
]);
const OK_COLOR = "#4caf50";
const WARN_COLOR = "#ff9800";

function reportText(report) {
  if (!report) return "";
  if (report.without_face > 0) {
    return `\u26A0 no face in ${report.without_face} of ${report.frames} frames (passed through)`;
  }
  return `\u2713 face found in all ${report.frames} frames`;
}

function showToast(node, report) {
  const toast = app.extensionManager?.toast;
  if (!toast || !report.warning) return;
  toast.add({
    severity: "warn",
    summary: `LatentSync: ${node.title || node.type}`,
    detail: report.warning,
    life: 10000,
  });
}

app.registerExtension({
  name: "LatentSync.FaceReport",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!REPORTING_NODES.has(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const report = message?.latentsync_faces?.[0];
      if (report) {
        this.latentsyncReport = report;
        this.latentsyncReportText = reportText(report);
        if (report.without_face > 0) showToast(this, report);
        this.setDirtyCanvas?.(true, true);
      }
      return result;
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      const report = this.latentsyncReport;
      if (!report || this.flags?.collapsed) return result;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillStyle = report.without_face > 0 ? WARN_COLOR : OK_COLOR;
      ctx.fillText(this.latentsyncReportText, 6, this.size[1] + 6);
      ctx.restore();
      return result;
    };

    // A fresh run starts without a stale report.
    const onExecutionStart = nodeType.prototype.onExecutionStart;
    nodeType.prototype.onExecutionStart = function () {
      const result = onExecutionStart?.apply(this, arguments);
      this.latentsyncReport = null;
      this.latentsyncReportText = "";
      return result;
    };
  },
});

// Sync scores (LatentSync Sync Score, and the lip-sync nodes with their `score` switch on): the nodes return
// `{latentsync_sync: [{label, confidence, distance, offset_frames, offset_seconds, frames_scored, frames, error,
// tiny}]}`; the figures are drawn under the node (below the face report when there is one).
const SYNC_NODES = new Set(["LatentSyncSyncScore", "LatentSyncLipSyncVideo", "LatentSyncLipSyncImages"]);
const SYNC_GOOD = 3.0; // the official data pipeline keeps clips with confidence >= 3

function syncText(report) {
  if (!report) return "";
  const label = report.label ? `${report.label} ` : "";
  if (report.error) return `\u26A0 ${label}not scored: ${report.error}`;
  const offset = report.offset_frames > 0 ? `+${report.offset_frames}` : `${report.offset_frames}`;
  const tiny = report.tiny ? " (random weights)" : "";
  return `${label}sync: confidence ${report.confidence.toFixed(2)} \u00B7 distance ` +
    `${report.distance.toFixed(2)} \u00B7 offset ${offset} fr${tiny}`;
}

app.registerExtension({
  name: "LatentSync.SyncReport",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!SYNC_NODES.has(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const report = message?.latentsync_sync?.[0];
      if (report) {
        this.latentsyncSync = report;
        this.latentsyncSyncText = syncText(report);
        this.setDirtyCanvas?.(true, true);
      }
      return result;
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      const report = this.latentsyncSync;
      if (!report || this.flags?.collapsed) return result;
      const good = !report.error && !report.tiny && report.confidence >= SYNC_GOOD;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillStyle = report.error ? WARN_COLOR : good ? OK_COLOR : "#9e9e9e";
      ctx.fillText(this.latentsyncSyncText, 6, this.size[1] + (this.latentsyncReport ? 24 : 6));
      ctx.restore();
      return result;
    };

    const onExecutionStart = nodeType.prototype.onExecutionStart;
    nodeType.prototype.onExecutionStart = function () {
      const result = onExecutionStart?.apply(this, arguments);
      this.latentsyncSync = null;
      this.latentsyncSyncText = "";
      return result;
    };
  },
});

// The face analyzer loader says which detector it uses and why (`auto` falls back to the offline detector when
// InsightFace's buffalo_l is not there and cannot be downloaded): `{latentsync_face_backend: [{requested, backend,
// reason}]}`, drawn under the node, wrapped to its width.
const BACKEND_LABELS = { insightface: "InsightFace buffalo_l", offline: "offline RetinaFace" };

function backendText(info) {
  const label = BACKEND_LABELS[info.backend] || info.backend;
  return `${info.requested === "auto" ? "auto \u2192 " : ""}${label}: ${info.reason}`;
}

function wrapLines(ctx, text, width) {
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else {
      line = next;
    }
  }
  if (line) lines.push(line);
  return lines;
}

// Draws a note under the node, wrapped to its width, from the `payloadKey` entry of the `ui` the node returns when
// it has run: `text(info)` is the note, `warn(info)` picks the warning colour.
function addNodeNote(nodeType, payloadKey, text, warn) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    const result = onExecuted?.apply(this, arguments);
    const info = message?.[payloadKey]?.[0];
    if (info) {
      this.latentsyncNotes = { ...this.latentsyncNotes, [payloadKey]: { info, text: text(info) } };
      this.setDirtyCanvas?.(true, true);
    }
    return result;
  };

  const onDrawForeground = nodeType.prototype.onDrawForeground;
  nodeType.prototype.onDrawForeground = function (ctx) {
    const result = onDrawForeground?.apply(this, arguments);
    const note = this.latentsyncNotes?.[payloadKey];
    if (!note || this.flags?.collapsed) return result;
    ctx.save();
    ctx.font = "12px sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillStyle = warn(note.info) ? WARN_COLOR : OK_COLOR;
    wrapLines(ctx, note.text, Math.max(this.size[0] - 12, 120)).forEach((line, i) => {
      ctx.fillText(line, 6, this.size[1] + 6 + 15 * i);
    });
    ctx.restore();
    return result;
  };
}

app.registerExtension({
  name: "LatentSync.FaceBackend",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "LatentSyncFaceAnalyzerLoader") return;
    addNodeNote(nodeType, "latentsync_face_backend", backendText,
                (info) => info.requested === "auto" && info.backend === "offline");
  },
});

// The model loader says which LatentSync version it loads and how it knows (`auto` reads it from the folder or file
// name and assumes 1.5 when the name has none): `{latentsync_model: [{version, resolution, how, assumed, tiny}]}`;
// an assumed version or a tiny random set in the warning colour.
function modelText(info) {
  const tiny = info.tiny ? " \u2014 TINY RANDOM set: the mouth is noise" : "";
  return `LatentSync ${info.version} (${info.resolution} px faces), ${info.how}${tiny}`;
}

app.registerExtension({
  name: "LatentSync.ModelVersion",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "LatentSyncModelLoader") return;
    addNodeNote(nodeType, "latentsync_model", modelText, (info) => info.assumed || info.tiny);
  },
});
