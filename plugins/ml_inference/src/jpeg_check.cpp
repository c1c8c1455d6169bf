#include "jpeg_check.hpp"

#include <csetjmp>
#include <cstdio> // jpeglib.h needs FILE

#include <jpeglib.h>
// After jpeglib.h: its message list depends on jconfig.h's macros.
#include <jerror.h>

namespace grove::ml {

namespace {

/// libjpeg's error manager that makes corrupt data fatal (jpeg_problem). libjpeg reports
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
/// metadata that libjpeg reads past with a correct image.
bool corrupt_data(int code) {
  switch (code) {
#if JPEG_LIB_VERSION >= 70 || defined(C_ARITH_CODING_SUPPORTED) \
  || defined(D_ARITH_CODING_SUPPORTED) // jerror.h's own condition for it
    case JWRN_ARITH_BAD_CODE:
#endif
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_EXTRANEOUS_DATA:
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

} // namespace

// Only plain C objects live in this frame: libjpeg's errors longjmp out of its calls.
std::string jpeg_problem(std::string_view b) {
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
  jpeg_read_header(&cinfo, TRUE);
  cinfo.scale_num = 1;
  cinfo.scale_denom = 8;
  cinfo.dct_method = JDCT_IFAST;
  cinfo.do_fancy_upsampling = FALSE;
  cinfo.out_color_space = cinfo.jpeg_color_space; // no colour conversion
  jpeg_start_decompress(&cinfo);
  // One output row, from libjpeg's pool (freed with it, also after a longjmp).
  JSAMPARRAY row = (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
                                             cinfo.output_width
                                               * static_cast<JDIMENSION>(cinfo.output_components),
                                             1);
  while (cinfo.output_scanline < cinfo.output_height)
    jpeg_read_scanlines(&cinfo, row, 1);
  jpeg_finish_decompress(&cinfo); // reads on to the end marker: data past the scan counts
  jpeg_destroy_decompress(&cinfo);
  return {};
}

} // namespace grove::ml
