#include "jpeg_check.hpp"

#include <csetjmp>
#include <cstdio> // jpeglib.h needs FILE

#include <opencv2/core.hpp>

#include <jpeglib.h>
// After jpeglib.h: its message list depends on jconfig.h's macros.
#include <jerror.h>

namespace grove::ml {

namespace {

/// libjpeg's error manager that makes corrupt data fatal (decode_jpeg). libjpeg reports
/// corrupt entropy-coded data, a file cut short or data past the scan only as warnings and
/// decodes what it can (the rest gray or garbage); OpenCV's decoder prints the warning and
/// returns that image.
struct strict_jpeg_error {
  jpeg_error_mgr mgr; // first: libjpeg's callbacks get a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  /// Scans started so far.
  int scans = 0;
};

/// Scans a JPEG may have: a progressive one of a few hundred bytes can hold thousands,
/// each a pass over the whole image (libjpeg-turbo's TurboJPEG API limits them to 500
/// with TJFLAG_LIMITSCANS, for the same reason).
constexpr int max_scans = 500;

/// The warnings that mean the data is corrupt (jerror.h's "Corrupt JPEG data", a premature
/// end, a bad scan script). Others (an unknown JFIF revision or Adobe transform code) are
/// metadata that libjpeg reads past with a correct image; so are stray bytes between
/// markers (JWRN_EXTRANEOUS_DATA, "N extraneous bytes before marker"), which some encoders
/// write and PIL and libjpeg's own tools read past: every byte of the image's scans was
/// read by then, and a scan cut or corrupt by them warns of that too.
bool corrupt_data(int code) {
  switch (code) {
#if JPEG_LIB_VERSION >= 70 || defined(C_ARITH_CODING_SUPPORTED) \
  || defined(D_ARITH_CODING_SUPPORTED) // jerror.h's own condition for it
    case JWRN_ARITH_BAD_CODE:
#endif
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_JPEG_EOF:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_TOO_MUCH_DATA:
      return true;
    default:
      return false;
  }
}

[[noreturn]] void strict_jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<strict_jpeg_error*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

void strict_jpeg_message(j_common_ptr c, int level) {
  if (level < 0 && corrupt_data(c->err->msg_code))
    strict_jpeg_fail(c);
  auto* e = reinterpret_cast<strict_jpeg_error*>(c->err);
  if (c->err->msg_code == JTRC_SOS && ++e->scans > max_scans) {
    std::snprintf(e->message, sizeof(e->message), "more than %d scans", max_scans);
    std::longjmp(e->jump, 1);
  }
  // Other warnings and trace messages: read past, printed nowhere.
}

/// Reads the EXIF orientation as OpenCV 4's ExifReader does: the TIFF header 6 bytes into
/// the segment ("II"/"MM", 42), the first directory's entries in order until one is the
/// orientation (its value the entry's first 16 bits) or one is cut short.
int tiff_orientation(const unsigned char* d, size_t n) {
  if (n < 8 || d[0] != d[1] || (d[0] != 'I' && d[0] != 'M'))
    return 0;
  bool intel = d[0] == 'I';
  auto u16 = [&](size_t at) -> long {
    if (at + 1 >= n)
      return -1;
    return intel ? d[at] | d[at + 1] << 8 : d[at] << 8 | d[at + 1];
  };
  if (u16(2) != 0x2A)
    return 0;
  size_t at = intel ? static_cast<size_t>(d[4]) | static_cast<size_t>(d[5]) << 8
                        | static_cast<size_t>(d[6]) << 16 | static_cast<size_t>(d[7]) << 24
                    : static_cast<size_t>(d[4]) << 24 | static_cast<size_t>(d[5]) << 16
                        | static_cast<size_t>(d[6]) << 8 | static_cast<size_t>(d[7]);
  auto entries = u16(at);
  if (entries < 0)
    return 0;
  at += 2;
  for (long i = 0; i < entries && at < n; ++i, at += 12) {
    auto tag = u16(at);
    if (tag < 0)
      return 0;
    if (tag == 0x0112) {
      auto v = u16(at + 8);
      return v >= 1 && v <= 8 ? static_cast<int>(v) : 0;
    }
  }
  return 0;
}

/// OpenCV's CMYK conversions (imgcodecs' utils.cpp: icvCvt_CMYK2BGR_8u_C4C3R and
/// icvCvt_CMYK2Gray_8u_C4C1R), one row.
void cmyk_row(const unsigned char* cmyk, unsigned char* px, size_t width, bool gray) {
  constexpr int shift = 14;
  constexpr int r_w = static_cast<int>(0.299 * (1 << shift) + 0.5);
  constexpr int g_w = static_cast<int>(0.587 * (1 << shift) + 0.5);
  constexpr int b_w = (1 << shift) - r_w - g_w;
  for (size_t x = 0; x < width; ++x, cmyk += 4) {
    int k = cmyk[3];
    int c = k - ((255 - cmyk[0]) * k >> 8);
    int m = k - ((255 - cmyk[1]) * k >> 8);
    int y = k - ((255 - cmyk[2]) * k >> 8);
    if (gray) {
      int luma = y * b_w + m * g_w + c * r_w;
      px[x] = static_cast<unsigned char>((luma + (1 << (shift - 1))) >> shift);
    } else {
      px[3 * x] = static_cast<unsigned char>(y);
      px[3 * x + 1] = static_cast<unsigned char>(m);
      px[3 * x + 2] = static_cast<unsigned char>(c);
    }
  }
}

/// Where decode_into writes: the caller's rows, made once the size is known (C++ stays
/// out of the frame that libjpeg longjmps into).
struct pixel_sink {
  cv::Mat* out;
  int type;
  /// Row `y` of an image of `rows` x `cols`, allocated at row 0; null when that fails.
  unsigned char* row(int y, int rows, int cols) noexcept {
    try {
      if (y == 0)
        out->create(rows, cols, type);
      return out->ptr<unsigned char>(y);
    } catch (...) {
      return nullptr;
    }
  }
};

// Only plain C objects live in this frame: libjpeg's errors longjmp out of its calls.
std::string decode_into(std::string_view b, bool gray, pixel_sink& sink, int& orientation) {
  jpeg_decompress_struct cinfo;
  strict_jpeg_error err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = strict_jpeg_fail;
  err.mgr.emit_message = strict_jpeg_message;
  err.message[0] = '\0';
  if (setjmp(err.jump) != 0) {
    jpeg_destroy_decompress(&cinfo);
    return err.message[0] != '\0' ? err.message : "libjpeg failed";
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(b.data()),
               static_cast<unsigned long>(b.size()));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  // OpenCV's choices (grfmt_jpeg.cpp, JpegDecoder::readData): CMYK read as it is and
  // converted after, the rest converted by libjpeg; the other settings libjpeg's defaults.
  bool cmyk = cinfo.num_components == 4;
  cinfo.out_color_space = cmyk ? JCS_CMYK : gray ? JCS_GRAYSCALE : JCS_EXT_BGR;
  // OpenCV reads the first APP1 segment, whatever it holds.
  orientation = 0;
  for (auto* m = cinfo.marker_list; m != nullptr; m = m->next)
    if (m->marker == JPEG_APP0 + 1) {
      if (m->data_length > 6)
        orientation = tiff_orientation(m->data + 6, m->data_length - 6);
      break;
    }
  jpeg_start_decompress(&cinfo);
  JSAMPARRAY cmyk_buf = nullptr;
  if (cmyk)
    cmyk_buf = (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
                                          cinfo.output_width * 4, 1);
  auto rows = static_cast<int>(cinfo.output_height), cols = static_cast<int>(cinfo.output_width);
  while (cinfo.output_scanline < cinfo.output_height) {
    auto y = static_cast<int>(cinfo.output_scanline);
    unsigned char* px = sink.row(y, rows, cols);
    if (px == nullptr) {
      jpeg_destroy_decompress(&cinfo);
      return "no memory for " + std::to_string(cols) + "x" + std::to_string(rows) + " pixels";
    }
    JSAMPROW target = cmyk ? cmyk_buf[0] : px;
    jpeg_read_scanlines(&cinfo, &target, 1);
    if (cmyk)
      cmyk_row(cmyk_buf[0], px, cinfo.output_width, gray);
  }
  jpeg_finish_decompress(&cinfo); // reads on to the end marker: data past the scan counts
  jpeg_destroy_decompress(&cinfo);
  return {};
}

} // namespace

int exif_orientation(std::string_view app1) {
  if (app1.size() <= 6)
    return 0;
  return tiff_orientation(reinterpret_cast<const unsigned char*>(app1.data()) + 6,
                          app1.size() - 6);
}

std::string decode_jpeg(std::string_view jpeg, bool gray, cv::Mat& out) {
  pixel_sink sink{&out, gray ? CV_8UC1 : CV_8UC3};
  int orientation = 0;
  auto why = decode_into(jpeg, gray, sink, orientation);
  if (!why.empty()) {
    out.release();
    return why;
  }
  // OpenCV's ExifTransform (loadsave.cpp): 2..8 mirror, turn or both.
  if (orientation >= 5)
    cv::transpose(out, out);
  switch (orientation) {
    case 2:
    case 6:
      cv::flip(out, out, 1);
      break;
    case 3:
    case 7:
      cv::flip(out, out, -1);
      break;
    case 4:
    case 8:
      cv::flip(out, out, 0);
      break;
    default:
      break;
  }
  return {};
}

} // namespace grove::ml
