/*
 * JPEG compression/decompression through the IJG libjpeg API, as MATLAB's imwrite and the
 * papers' JPEG inputs were made: jpeg_set_quality(q, baseline) with the standard IJG
 * quantisation tables, the accurate integer DCT (JDCT_ISLOW) both ways, default Huffman
 * tables and, for colour, YCbCr 4:2:0 with the library's default (fancy) upsampling.
 *
 * Why C and not a crate: the Rust encoders (image/jpeg-encoder) use other DCTs/rounding and
 * differ from libjpeg on 1-2% of pixels; the `turbojpeg` crate needs either cmake + nasm to
 * build its bundled library or the TurboJPEG headers, which a fresh machine does not have.
 * The plain libjpeg API is on every machine with libjpeg62-turbo-dev, and this bridge is the
 * whole of it that Pyra needs.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct pyra_error {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void pyra_error_exit(j_common_ptr cinfo) {
    struct pyra_error *err = (struct pyra_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void pyra_silent(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; }

/* Encode `pixels` (rows of width*channels bytes, channels 1 or 3) at `quality` (1-100).
 * On success returns 0 and sets *out / *out_len (free with pyra_jpeg_free). */
int pyra_jpeg_encode(const unsigned char *pixels, int width, int height, int channels,
                     int quality, unsigned char **out, unsigned long *out_len,
                     char *message, int message_len) {
    struct jpeg_compress_struct cinfo;
    struct pyra_error err;
    unsigned char *buffer = NULL;
    unsigned long size = 0;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = pyra_error_exit;
    err.mgr.emit_message = pyra_silent;
    if (setjmp(err.jump)) {
        snprintf(message, message_len, "%s", err.message);
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        return 1;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buffer, &size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * width * channels);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buffer;
    *out_len = size;
    return 0;
}

/* Decode a JPEG into `pixels` (width*height*channels bytes, allocated by the caller after
 * pyra_jpeg_header). Returns 0 on success. */
int pyra_jpeg_header(const unsigned char *data, unsigned long len, int *width, int *height,
                     int *channels, char *message, int message_len) {
    struct jpeg_decompress_struct cinfo;
    struct pyra_error err;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = pyra_error_exit;
    err.mgr.emit_message = pyra_silent;
    if (setjmp(err.jump)) {
        snprintf(message, message_len, "%s", err.message);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    *channels = cinfo.num_components == 1 ? 1 : 3;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

int pyra_jpeg_decode(const unsigned char *data, unsigned long len, unsigned char *pixels,
                     int width, int height, int channels, char *message, int message_len) {
    struct jpeg_decompress_struct cinfo;
    struct pyra_error err;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = pyra_error_exit;
    err.mgr.emit_message = pyra_silent;
    if (setjmp(err.jump)) {
        snprintf(message, message_len, "%s", err.message);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&cinfo);
    if ((int)cinfo.output_width != width || (int)cinfo.output_height != height ||
        cinfo.output_components != channels) {
        snprintf(message, message_len, "decoded size differs from the header");
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.output_scanline * width * channels);
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

void pyra_jpeg_free(unsigned char *buffer) { free(buffer); }
