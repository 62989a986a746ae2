// The input contract of lenet-edge's models, in the page: the same steps and the same integer
// arithmetic as lenet_edge/data/preprocess.py (and folders.load_image before it), so a digit drawn or
// dropped here reaches the model as the very 28x28 image `lenet-edge predict` would give it (tests
// compare the two pixel by pixel).
//
//   1. grayscale: Pillow's ITU-R 601-2 luma in 16-bit fixed point (a transparent image is first
//      composited onto white by the page's canvas);
//   2. white ink on black: inverted when the mean of the border pixels exceeds 128;
//   3. crop to the bounding box of pixels > 64;
//   4. resize keeping the aspect ratio, longer side 20 px, Lanczos: Pillow 13's two-pass resampler,
//      its coefficients in 22-bit fixed point, its choice of which pass goes first;
//   5. paste into 28x28 black so the centre of mass is at (13.5, 13.5), rounding as Python does
//      (half to even).

export const CANVAS = 28;
export const BOX = 20;
export const INK_THRESHOLD = 64;
export const BORDER_DARK_MAX = 128;
const PRECISION_BITS = 32 - 8 - 2;  // Pillow's 8-bit resampler: 8 bits of value, 2 of headroom
const LANCZOS_SUPPORT = 3.0;

// Python's round(): halves go to the even neighbour.
export function roundHalfEven(x) {
  const floor = Math.floor(x), difference = x - floor;
  if (difference > 0.5) return floor + 1;
  if (difference < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

// RGBA pixels (an opaque canvas's getImageData) -> gray, as Pillow's convert("L").
export function luma(rgba, width, height) {
  const gray = new Uint8Array(width * height);
  for (let i = 0, p = 0; i < gray.length; i++, p += 4) {
    gray[i] = (rgba[p] * 19595 + rgba[p + 1] * 38470 + rgba[p + 2] * 7471 + 0x8000) >>> 16;
  }
  return gray;
}

// True when the border is bright on average: dark ink on light paper.
export function isDarkOnLight(gray, width, height) {
  let sum = 0, count = 0;
  const add = (x, y) => { sum += gray[y * width + x]; count++; };
  for (let x = 0; x < width; x++) { add(x, 0); add(x, height - 1); }
  for (let y = 0; y < height; y++) { add(0, y); add(width - 1, y); }
  return sum / count > BORDER_DARK_MAX;
}

export function toWhiteOnBlack(gray, width, height) {
  if (!isDarkOnLight(gray, width, height)) return gray;
  return gray.map((v) => 255 - v);
}

function lanczos(x) {
  const sinc = (t) => (t === 0 ? 1 : Math.sin(t * Math.PI) / (t * Math.PI));
  return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: per output pixel, the first input
// pixel, how many it reads and their integer weights.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = LANCZOS_SUPPORT * filterscale;
  const result = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const weights = [];
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * ss);
      weights.push(w);
      total += w;
    }
    const fixed = weights.map((w) => {
      const k = total !== 0 ? w / total : w;
      return Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    });
    result.push({xmin, weights: fixed});
  }
  return result;
}

function clip8(sum) {  // Pillow's clip8: the value in the top bits, saturated to 0-255
  const v = Math.floor(sum / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One pass of Pillow's 8-bit resampler along one axis of a width x height image (`first`: the first source
// row or column the pass reads, when the image is a band of a larger one).
function pass(src, width, height, coefficients, horizontal, first = 0) {
  const outWidth = horizontal ? coefficients.length : width;
  const outHeight = horizontal ? height : coefficients.length;
  const out = new Uint8Array(outWidth * outHeight);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const {xmin, weights} = coefficients[horizontal ? x : y];
      let sum = 1 << (PRECISION_BITS - 1);
      if (horizontal) {
        const row = (y + first) * width + xmin;
        for (let k = 0; k < weights.length; k++) sum += src[row + k] * weights[k];
      } else {
        const start = (xmin - first) * width + x;
        for (let k = 0; k < weights.length; k++) sum += src[start + k * width] * weights[k];
      }
      out[y * outWidth + x] = clip8(sum);
    }
  }
  return out;
}

// Pillow's Image.resize(LANCZOS) of a one-channel 8-bit image (Pillow 13's ImagingResampleInner: the
// vertical pass first when the height shrinks by more than twice what the width does, else the
// horizontal pass first, over only the rows the vertical pass then reads).
export function resizeLanczos(src, width, height, newWidth, newHeight) {
  if (newWidth === width && newHeight === height) return Uint8Array.from(src);  // Pillow returns a copy
  const horizontalFirst = !(height - newHeight > 0 && height - newHeight > (width - newWidth) * 2);
  const vertical = newHeight !== height ? coefficients(height, newHeight) : null;
  const horizontal = newWidth !== width ? coefficients(width, newWidth) : null;
  if (horizontalFirst) {
    let image = src, rows = height, first = 0;
    if (horizontal) {
      const band = coefficients(height, newHeight);  // the rows the vertical pass will read
      first = band[0].xmin;
      rows = band[newHeight - 1].xmin + band[newHeight - 1].weights.length - first;
      image = pass(src, width, height, horizontal, true, first);
    }
    return vertical ? pass(image, newWidth, rows, vertical, false, horizontal ? first : 0) : image;
  }
  const image = pass(src, width, height, vertical, false);
  return horizontal ? pass(image, width, newHeight, horizontal, true) : image;
}

// One white-on-black gray image of any size -> the 28x28 model frame (all black when there is no ink).
export function preprocess(gray, width, height) {
  const out = new Uint8Array(CANVAS * CANVAS);
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (gray[y * width + x] > INK_THRESHOLD) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return out;
  const h = bottom - top + 1, w = right - left + 1;
  const crop = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) crop.set(gray.subarray((top + y) * width + left, (top + y) * width + left + w), y * w);
  const scale = BOX / Math.max(h, w);
  const newW = Math.max(1, roundHalfEven(w * scale)), newH = Math.max(1, roundHalfEven(h * scale));
  const patch = resizeLanczos(crop, w, h, newW, newH);
  // centre of mass: integer sums, exact in doubles, so the division is Python's to the last bit
  let total = 0, rowMoment = 0, colMoment = 0;
  for (let y = 0; y < newH; y++) {
    for (let x = 0; x < newW; x++) {
      const v = patch[y * newW + x];
      total += v; rowMoment += v * y; colMoment += v * x;
    }
  }
  if (total === 0) return out;  // resampling can wipe a single faint pixel
  const centre = (CANVAS - 1) / 2;
  const row = Math.min(Math.max(roundHalfEven(centre - rowMoment / total), 0), CANVAS - newH);
  const col = Math.min(Math.max(roundHalfEven(centre - colMoment / total), 0), CANVAS - newW);
  for (let y = 0; y < newH; y++) out.set(patch.subarray(y * newW, (y + 1) * newW), (row + y) * CANVAS + col);
  return out;
}

// An opaque canvas's RGBA pixels -> the model frame: grayscale, polarity, preprocess.
export function fromRgba(rgba, width, height) {
  return preprocess(toWhiteOnBlack(luma(rgba, width, height), width, height), width, height);
}

export const MAX_PIXELS = 40_000_000;  // as `lenet-edge read`: a larger image is refused

// An image file (a Blob) -> {input: the model frame, width, height, bitmap}, decoded by the browser at
// full size, EXIF orientation applied, no colour management, transparency composited onto white paper
// (as lenet-edge's load_image does). Throws an Error saying what is wrong with the file.
export async function fromBlob(blob, name = "the file") {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {colorSpaceConversion: "none", imageOrientation: "from-image"});
  } catch {
    throw new Error(`${name}: not an image this browser can read (${blob.type || "unknown type"}); drop a PNG, JPEG, GIF, WebP or BMP of one digit, or a .tflite model`);
  }
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    bitmap.close();
    throw new Error(`${name}: ${bitmap.width}x${bitmap.height} is over ${MAX_PIXELS / 1e6} megapixels; crop it to the digit`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  return {input: fromRgba(rgba, canvas.width, canvas.height), width: canvas.width, height: canvas.height, bitmap};
}
