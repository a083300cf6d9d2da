#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace qforge::data {
namespace {

constexpr uint8_t kUnsignedByte = 0x08;
constexpr int kMaxDims = 4;
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 40;

// A zlib read handle that reads gzip and raw files alike and turns zlib
// errors into qforge errors naming the file.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    QF_CHECK_IO(std::filesystem::exists(status)) << path << ": no such file";
    QF_CHECK_IO(std::filesystem::is_regular_file(status)) << path << ": not a regular file";
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    QF_CHECK_IO(file_ != nullptr) << path << ": cannot open: " << (errno ? std::strerror(errno) : "out of memory");
    gzbuffer(file_, 1 << 18);
  }
  ~GzReader() { gzclose_r(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to `n` bytes into `dst`; fewer only at the end of the data.
  uint64_t read(void* dst, uint64_t n) {
    char* p = static_cast<char*>(dst);
    uint64_t got = 0;
    while (got < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n - got, 1u << 30));
      errno = 0;
      const int r = gzread(file_, p + got, chunk);
      if (r < 0) raise();
      if (r == 0) break;
      got += static_cast<uint64_t>(r);
    }
    int err = Z_OK;
    gzerror(file_, &err);
    if (err != Z_OK && err != Z_BUF_ERROR) raise();
    return got;
  }

  // Bytes left until the end of the data (reads them).
  uint64_t count_rest() {
    std::array<char, 1 << 16> buf;
    uint64_t total = 0;
    while (const uint64_t got = read(buf.data(), buf.size())) total += got;
    return total;
  }

  // True when a gzip stream ended before its end marker and checksum.
  bool stream_cut_short() const {
    int err = Z_OK;
    gzerror(file_, &err);
    return err == Z_BUF_ERROR;
  }

 private:
  [[noreturn]] void raise() {
    int err = Z_OK;
    const char* msg = gzerror(file_, &err);
    if (err == Z_ERRNO) QF_THROW(IOError) << path_ << ": read error: " << std::strerror(errno);
    if (err == Z_MEM_ERROR) QF_THROW(IOError) << path_ << ": out of memory while decompressing";
    QF_THROW(FormatError) << path_ << ": corrupt gzip stream: " << msg;
    std::abort();  // unreachable: QF_THROW throws
  }

  std::string path_;
  gzFile file_ = nullptr;
};

std::string hex(uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%0*x", digits, v);
  return buf;
}

const char* idx_type_name(uint8_t t) {
  switch (t) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0b:
      return "int16";
    case 0x0c:
      return "int32";
    case 0x0d:
      return "float32";
    case 0x0e:
      return "float64";
    default:
      return "unknown type";
  }
}

std::string dims_str(const Shape& dims) {
  std::ostringstream os;
  for (size_t i = 0; i < dims.size(); ++i) os << (i ? "x" : "") << dims[i];
  return os.str();
}

}  // namespace

Tensor read_idx(const std::string& path, int expected_ndim) {
  QF_CHECK(expected_ndim >= 0 && expected_ndim <= kMaxDims)
      << "read_idx: expected_ndim must be 0 (any) or 1.." << kMaxDims << ", got " << expected_ndim;
  GzReader in(path);

  uint8_t magic[4];
  const uint64_t magic_got = in.read(magic, 4);
  QF_CHECK_FORMAT(magic_got == 4) << path << ": truncated: file has " << magic_got
                                  << " bytes, an IDX header needs at least 4";
  const uint32_t magic_value =
      (uint32_t{magic[0]} << 24) | (uint32_t{magic[1]} << 16) | (uint32_t{magic[2]} << 8) | uint32_t{magic[3]};
  const int ndim = magic[3];
  const std::string expected = expected_ndim > 0
                                   ? hex(0x800u | static_cast<uint32_t>(expected_ndim), 8) + " (unsigned byte, " +
                                         std::to_string(expected_ndim) + (expected_ndim == 1 ? " dim)" : " dims)")
                                   : std::string("0x0000080N (unsigned byte, N = 1..4 dims)");
  const std::string bad_magic = path + ": bad magic " + hex(magic_value, 8) + ", expected " + expected;
  QF_CHECK_FORMAT(magic[0] == 0 && magic[1] == 0)
      << bad_magic << ": the first two bytes must be zero (not an IDX file?)";
  QF_CHECK_FORMAT(magic[2] == kUnsignedByte)
      << bad_magic << ": element type " << hex(magic[2], 2) << " (" << idx_type_name(magic[2])
      << ") is not supported, only 0x08 (unsigned byte)";
  QF_CHECK_FORMAT(ndim >= 1 && ndim <= kMaxDims)
      << bad_magic << ": " << ndim << " dims, IDX files need 1.." << kMaxDims;
  QF_CHECK_FORMAT(expected_ndim == 0 || ndim == expected_ndim) << bad_magic << ": the file has " << ndim << " dims";

  const uint64_t header_bytes = 4 + 4 * static_cast<uint64_t>(ndim);
  uint8_t raw_dims[4 * kMaxDims];
  const uint64_t dims_got = in.read(raw_dims, 4 * static_cast<uint64_t>(ndim));
  QF_CHECK_FORMAT(dims_got == 4 * static_cast<uint64_t>(ndim))
      << path << ": truncated: the header of " << ndim << " dims needs " << header_bytes << " bytes, file has "
      << 4 + dims_got;
  Shape dims(ndim);
  uint64_t payload = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint8_t* b = raw_dims + 4 * i;
    const uint64_t d = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16) | (uint64_t{b[2]} << 8) | uint64_t{b[3]};
    dims[i] = static_cast<int64_t>(d);
    payload = (d != 0 && payload > kMaxPayloadBytes / d) ? kMaxPayloadBytes + 1 : payload * d;
  }
  QF_CHECK_FORMAT(payload <= kMaxPayloadBytes)
      << path << ": header dims " << dims_str(dims) << " describe more than " << kMaxPayloadBytes << " bytes";

  Tensor out = Tensor::empty(dims, DType::u8);
  const uint64_t got = payload ? in.read(out.raw(), payload) : 0;
  QF_CHECK_FORMAT(got == payload) << path << ": truncated: header says " << dims_str(dims) << " = " << payload
                                  << " bytes, file has " << got << " after the " << header_bytes << "-byte header"
                                  << (in.stream_cut_short() ? " (the gzip stream ends early)" : "");
  const uint64_t extra = in.count_rest();
  QF_CHECK_FORMAT(extra == 0) << path << ": trailing bytes: header says " << dims_str(dims) << " = " << payload
                              << " bytes, file has " << payload + extra << " after the " << header_bytes
                              << "-byte header";
  QF_CHECK_FORMAT(!in.stream_cut_short())
      << path << ": truncated gzip stream: all " << payload
      << " payload bytes are present but the stream's end marker or checksum is missing";
  return out;
}

}  // namespace qforge::data
