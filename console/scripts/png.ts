// Smaller PNGs of the same pixels. Chromium filters every row (Sub, Up,
// Paeth…) and deflates fast; a screenshot of a page (flat colours, text)
// deflates a quarter smaller unfiltered at zlib's best level. Lossless:
// the rows are unfiltered back to their pixels and written again.
import { deflateSync, inflateSync } from "node:zlib";

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

interface Chunk {
  type: string;
  data: Buffer;
}

function chunksOf(png: Buffer): Chunk[] {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error("not a PNG");
  const chunks: Chunk[] = [];
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at);
    chunks.push({ type: png.toString("latin1", at + 4, at + 8), data: png.subarray(at + 8, at + 8 + length) });
    at += 12 + length;
  }
  return chunks;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const byte of bytes) c = (CRC_TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** The rows of `filtered` (each led by its filter type) as raw pixels, each led by filter 0 (None). */
function unfiltered(filtered: Buffer, height: number, stride: number, bpp: number): Buffer {
  const out = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const filter = filtered[y * (stride + 1)];
    const row = y * (stride + 1) + 1;
    const previous = row - (stride + 1);
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? (out[row + x - bpp] ?? 0) : 0;
      const b = y > 0 ? (out[previous + x] ?? 0) : 0;
      const c = y > 0 && x >= bpp ? (out[previous + x - bpp] ?? 0) : 0;
      const predictor = filter === 1 ? a : filter === 2 ? b : filter === 3 ? (a + b) >> 1 : filter === 4 ? paeth(a, b, c) : 0;
      out[row + x] = ((filtered[row + x] ?? 0) + predictor) & 0xff;
    }
  }
  return out;
}

/** `png` with the same pixels, smaller; unchanged when it is not 8-bit RGB(A) without interlacing. */
export function recompressed(png: Buffer): Buffer {
  const chunks = chunksOf(png);
  const header = chunks.find((c) => c.type === "IHDR")?.data;
  if (header === undefined) throw new Error("a PNG without IHDR");
  const [width, height] = [header.readUInt32BE(0), header.readUInt32BE(4)];
  // Bit depth, colour type, then compression, filter and interlace methods.
  const [depth, colour, , , interlace] = header.subarray(8, 13);
  const bpp = colour === 2 ? 3 : colour === 6 ? 4 : 0;
  if (depth !== 8 || bpp === 0 || interlace !== 0) return png;
  const filtered = inflateSync(Buffer.concat(chunks.filter((c) => c.type === "IDAT").map((c) => c.data)));
  const pixels = unfiltered(filtered, height, width * bpp, bpp);
  const smaller = Buffer.concat([
    SIGNATURE,
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(pixels, { level: 9, memLevel: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
  return smaller.length < png.length ? smaller : png;
}
