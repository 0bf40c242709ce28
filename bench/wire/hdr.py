"""What the agent needs of HdrHistogram, in pure Python: recording and the V2 encoding.

hdrhistogram's wheels exist for some platforms only (x86_64, and for Python 3.9 an older
release than for the others), so the agent pex carries this instead and builds for every
host. It records value/count pairs into the same buckets as hdrh's ``HdrHistogram``, adds
histograms of the same settings and encodes them exactly as ``HdrHistogram.encode()`` does:
the same bytes for the same recorded histogram (checked against hdrh by the unit tests; the
zlib stage gives those bytes with the zlib of the controller, any zlib decodes them). Reading
(decoding, percentiles, merging many) is the controller's business and stays with hdrh.

Counts are kept sparse, by bucket index: a second of an agent touches a few hundred of the
~23,000 buckets, so recording, adding and encoding cost what was recorded, not the range.
Python 3.9+, standard library only.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib

# The V2 format: base64 of [cookie, length] + zlib([payload header] + ZigZag LEB128 counts).
# The 0x10 in both cookies is the word size hdrh and Java write (V2 always says 9 bytes).
ENCODING_COOKIE = 0x1C849303 | 0x10
COMPRESSION_COOKIE = 0x1C849304 | 0x10
OUTER = struct.Struct(">II")  # cookie, length of the zlib part
PAYLOAD = struct.Struct(">IIIIQQd")  # cookie, payload_len, normalizing offset, digits, lowest, highest, ratio
_MAX_COUNT = 2**63 - 1  # ZigZag of a signed 64-bit word: hdrh refuses larger counts too


class Histogram:
    """A histogram of non-negative integer values, from ``lowest`` to ``highest`` at ``digits``
    significant decimal digits: the buckets, totals and encoding of hdrh's ``HdrHistogram``."""

    def __init__(self, lowest: int, highest: int, digits: int) -> None:
        if not 1 <= digits <= 5:
            raise ValueError(f"significant digits must be 1 to 5, got {digits}")
        if lowest < 1 or highest < 2 * lowest:
            raise ValueError(f"need 1 <= lowest and 2 * lowest <= highest, got {lowest}, {highest}")
        self.lowest = lowest
        self.highest = highest
        self.digits = digits
        # The same arithmetic as hdrh (and Java's): floats where they use floats, so the bucket
        # layout, and with it the encoding, is theirs.
        self.unit_magnitude = int(math.floor(math.log(lowest) / math.log(2)))
        magnitude = int(math.ceil(math.log(2 * math.pow(10, digits)) / math.log(2)))
        self.half_count_magnitude = magnitude - 1 if magnitude > 1 else 0
        self.sub_bucket_count = 1 << (self.half_count_magnitude + 1)
        self.half_count = self.sub_bucket_count // 2
        self.sub_bucket_mask = (self.sub_bucket_count - 1) << self.unit_magnitude
        smallest_untrackable = self.sub_bucket_count << self.unit_magnitude
        buckets = 1
        while smallest_untrackable <= highest:
            if smallest_untrackable > (2**63 - 1) // 2:  # hdrh's sys.maxsize // 2
                buckets += 1
                break
            smallest_untrackable <<= 1
            buckets += 1
        self.bucket_count = buckets
        self.counts_len = (buckets + 1) * self.half_count
        self.counts: dict[int, int] = {}  # bucket index -> count, only what was recorded
        self.total_count = 0
        # Like hdrh's max_value: the highest bucket recorded into (even with a count of 0), which
        # is where its encoding stops; -1 while nothing was recorded.
        self.max_index = -1

    def index_of(self, value: int) -> int:
        """The bucket (index into the counts) that ``value`` falls in."""
        bucket = (value | self.sub_bucket_mask).bit_length() - self.unit_magnitude - self.half_count_magnitude - 1
        return ((bucket + 1) << self.half_count_magnitude) + (value >> (bucket + self.unit_magnitude)) - self.half_count

    def record_value(self, value: int, count: int = 1) -> bool:
        """Add ``count`` at ``value``; False (nothing recorded) when it is negative or beyond range."""
        if value < 0:
            return False
        index = self.index_of(value)
        if index >= self.counts_len:
            return False
        counts = self.counts
        counts[index] = counts.get(index, 0) + count
        self.total_count += count
        if index > self.max_index:
            self.max_index = index
        return True

    def record_counts(self, counts: dict[int, int], highest: int) -> None:
        """Record every ``value: count`` of ``counts``, each value clamped into ``[0, highest]``:
        ``record_value`` unrolled, for the agent's fold of a second's distinct values."""
        if highest < 0 or self.index_of(highest) >= self.counts_len:
            raise ValueError(f"{highest} is beyond this histogram's range")
        mine = self.counts
        get = mine.get
        mask, unit, half = self.sub_bucket_mask, self.unit_magnitude, self.half_count
        half_magnitude = self.half_count_magnitude
        shift = unit + half_magnitude + 1
        top = self.max_index
        total = 0
        for value, count in counts.items():
            if value > highest:
                value = highest
            elif value < 0:
                value = 0
            bucket = (value | mask).bit_length() - shift
            index = ((bucket + 1) << half_magnitude) + (value >> (bucket + unit)) - half
            mine[index] = get(index, 0) + count
            total += count
            if index > top:
                top = index
        self.total_count += total
        self.max_index = top

    def add(self, other: Histogram) -> None:
        """Add ``other``'s counts (same settings) to these."""
        if (other.lowest, other.highest, other.digits) != (self.lowest, self.highest, self.digits):
            raise ValueError("cannot add histograms of different settings")
        mine = self.counts
        get = mine.get
        for index, count in other.counts.items():
            mine[index] = get(index, 0) + count
        self.total_count += other.total_count
        if other.max_index > self.max_index:
            self.max_index = other.max_index

    def get_total_count(self) -> int:
        return self.total_count

    # -- reading (hdrh's arithmetic: the same values for the same counts) --

    def value_from_index(self, index: int) -> int:
        bucket = (index >> self.half_count_magnitude) - 1
        sub_bucket = (index & (self.half_count - 1)) + self.half_count
        if bucket < 0:
            sub_bucket -= self.half_count
            bucket = 0
        return sub_bucket << (bucket + self.unit_magnitude)

    def _range_size(self, value: int) -> int:
        bucket = (value | self.sub_bucket_mask).bit_length() - self.unit_magnitude - self.half_count_magnitude - 1
        sub_bucket = value >> (bucket + self.unit_magnitude)
        return 1 << (self.unit_magnitude + bucket + (1 if sub_bucket >= self.sub_bucket_count else 0))

    def highest_equivalent(self, value: int) -> int:
        lowest = self.value_from_index(self.index_of(value))
        return lowest + self._range_size(value) - 1

    def value_at_percentile(self, percentile: float) -> int:
        """hdrh's ``get_value_at_percentile``: the highest value equivalent to the bucket where the
        cumulative count first reaches the percentile's share of the total (0 when empty)."""
        if not self.total_count:
            return 0
        target = max(int(min(percentile, 100.0) * self.total_count / 100 + 0.5), 1)
        running = 0
        for index in sorted(self.counts):
            running += self.counts[index]
            if running >= target:
                value = self.value_from_index(index)
                return self.highest_equivalent(value) if percentile else value
        return 0

    def max_value(self) -> int:
        """The highest value equivalent to the highest bucket with a count (0 when empty)."""
        recorded = [i for i, c in self.counts.items() if c]
        return self.highest_equivalent(self.value_from_index(max(recorded))) if recorded else 0

    def mean(self) -> float:
        """hdrh's ``get_mean_value``: each bucket counted at its median equivalent value."""
        if not self.total_count:
            return 0.0
        total = 0
        for index, count in self.counts.items():
            value = self.value_from_index(index)
            total += (value + (self._range_size(value) >> 1)) * count
        return total / self.total_count

    def encode(self) -> bytes:
        """The compressed, base64 V2 encoding, the bytes ``HdrHistogram.encode()`` gives."""
        body = self._zigzag_counts() if self.total_count else b""
        payload = PAYLOAD.pack(ENCODING_COOKIE, len(body), 0, self.digits, self.lowest, self.highest, 1.0) + body
        packed = zlib.compress(payload)
        return base64.b64encode(OUTER.pack(COMPRESSION_COOKIE, len(packed)) + packed)

    def _zigzag_counts(self) -> bytes:
        """The counts up to ``max_index`` as ZigZag LEB128 words, each run of zeros as one
        negative word (its length). ZigZag maps a count n to 2n and a run of z zeros to 2z - 1;
        words below 2**14 (nearly all) take the inline one- and two-byte paths."""
        out = bytearray()
        append, extend = out.append, out.extend
        nxt = 0  # the index the encoding has reached
        counts = self.counts
        for index in sorted(counts):
            count = counts[index]
            if not count:
                continue  # recorded with a count of 0: part of a run of zeros
            if index > nxt:
                word = ((index - nxt) << 1) - 1
                if word < 0x80:
                    append(word)
                elif word < 0x4000:
                    append(word & 0x7F | 0x80)
                    append(word >> 7)
                else:
                    extend(_leb128(word))
            word = count << 1
            if word < 0x80:
                append(word)
            elif word < 0x4000:
                append(word & 0x7F | 0x80)
                append(word >> 7)
            elif 0 < count <= _MAX_COUNT:
                extend(_leb128(word))
            else:
                raise OverflowError(f"count {count} does not fit the V2 encoding's signed 64-bit words")
            nxt = index + 1
        if self.max_index >= nxt:
            extend(_leb128(((self.max_index + 1 - nxt) << 1) - 1))
        return bytes(out)


class DecodeError(ValueError):
    """Text that is not a V2 encoding of a histogram of the expected settings, or is too large."""


def inflate(text: str | bytes, most: int) -> bytes:
    """The payload of a compressed V2 encoding (its header checked), refused (:class:`DecodeError`)
    if it would inflate to more than ``most`` bytes: bounded before anything is inflated."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"not base64 ({exc})") from None
    if len(raw) < OUTER.size:
        raise DecodeError("too short")
    cookie, length = OUTER.unpack_from(raw)
    if cookie & ~0xF0 != COMPRESSION_COOKIE & ~0xF0 or length != len(raw) - OUTER.size:
        raise DecodeError("not an HdrHistogram V2 compressed encoding")
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(raw[OUTER.size:], most + 1)
    except zlib.error as exc:
        raise DecodeError(f"corrupt compressed payload ({exc})") from None
    if len(payload) > most:
        raise DecodeError(f"decompresses to more than {most} bytes, more than any histogram of these settings")
    if len(payload) < PAYLOAD.size:
        raise DecodeError("payload too short")
    if PAYLOAD.unpack_from(payload)[0] & ~0xF0 != ENCODING_COOKIE & ~0xF0:
        raise DecodeError("not an HdrHistogram V2 payload")
    return payload


def decode(text: str | bytes, lowest: int, highest: int, digits: int) -> Histogram:
    """The histogram a compressed V2 encoding holds, refused (:class:`DecodeError`) unless it has
    these settings; bounded by them before anything is inflated (a host's encoding is untrusted)."""
    histogram = Histogram(lowest, highest, digits)
    payload = inflate(text, PAYLOAD.size + histogram.counts_len * 9)
    _, body_len, _, got_digits, got_lowest, got_highest, _ = PAYLOAD.unpack_from(payload)
    if (got_lowest, got_highest, got_digits) != (lowest, highest, digits):
        raise DecodeError(f"settings {(got_lowest, got_highest, got_digits)} differ from {(lowest, highest, digits)}")
    body = payload[PAYLOAD.size:PAYLOAD.size + body_len]
    index = pos = 0
    while pos < len(body):
        word = shift = 0
        for k in range(9):
            if pos >= len(body):
                raise DecodeError("a count is cut off")
            byte = body[pos]
            pos += 1
            if k == 8:
                word |= byte << shift
                break
            word |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        value = (word >> 1) ^ -(word & 1)  # ZigZag
        if value < 0:
            index += -value
            continue
        if index >= histogram.counts_len:
            raise DecodeError("counts beyond the histogram's range")
        if value:
            histogram.counts[index] = value
            histogram.total_count += value
            histogram.max_index = index
        index += 1
    return histogram


def _leb128(word: int) -> bytes:
    """A ZigZag'd word (below 2**64) in at most 9 LEB128 bytes: the 9th carries 8 bits and no
    continuation bit, as in every HdrHistogram implementation."""
    out = bytearray()
    for _ in range(8):
        if word < 0x80:
            out.append(word)
            return bytes(out)
        out.append(word & 0x7F | 0x80)
        word >>= 7
    out.append(word)
    return bytes(out)
