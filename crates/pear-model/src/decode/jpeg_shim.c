/* The only C in pear-server: libjpeg reports errors by longjmp, which Rust
 * cannot catch, so every libjpeg call happens here behind setjmp and comes
 * back as a return code. Decoding itself is the system's libjpeg-turbo, the
 * library OpenCV's imread uses, with imread's settings (islow IDCT, fancy
 * upsampling), so pixels match the original server's bit for bit. */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct pear_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    char warning[JMSG_LENGTH_MAX];
    int warnings;
};

typedef struct pear_jpeg {
    struct jpeg_decompress_struct cinfo;
    struct pear_err err;
} pear_jpeg;

static void on_error(j_common_ptr c) {
    struct pear_err *e = (struct pear_err *)c->err;
    (*c->err->format_message)(c, e->message);
    longjmp(e->jump, 1);
}

/* Warnings (level -1) are how libjpeg reports truncated or corrupt data while
 * still handing back a picture; keep the first so the caller can refuse it. */
static void on_message(j_common_ptr c, int level) {
    struct pear_err *e = (struct pear_err *)c->err;
    if (level < 0) {
        if (e->warnings == 0)
            (*c->err->format_message)(c, e->warning);
        e->warnings++;
    }
}

static int create(pear_jpeg *j) {
    j->cinfo.err = jpeg_std_error(&j->err.pub);
    j->err.pub.error_exit = on_error;
    j->err.pub.emit_message = on_message;
    if (setjmp(j->err.jump))
        return -1;
    jpeg_create_decompress(&j->cinfo);
    return 0;
}

pear_jpeg *pear_jpeg_new(void) {
    pear_jpeg *j = (pear_jpeg *)calloc(1, sizeof(pear_jpeg));
    if (j && create(j) != 0) {
        free(j);
        return NULL;
    }
    return j;
}

void pear_jpeg_free(pear_jpeg *j) {
    if (!j)
        return;
    jpeg_destroy_decompress(&j->cinfo);
    free(j);
}

const char *pear_jpeg_error(const pear_jpeg *j) { return j->err.message; }
int pear_jpeg_warnings(const pear_jpeg *j) { return j->err.warnings; }
const char *pear_jpeg_warning(const pear_jpeg *j) { return j->err.warning; }

/* Reads the header of `data` (which must outlive the decode). */
int pear_jpeg_header(pear_jpeg *j, const uint8_t *data, size_t len, uint32_t *width, uint32_t *height,
                     int *components) {
    if (setjmp(j->err.jump))
        return -1;
    jpeg_mem_src(&j->cinfo, data, (unsigned long)len);
    jpeg_save_markers(&j->cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&j->cinfo, TRUE);
    *width = j->cinfo.image_width;
    *height = j->cinfo.image_height;
    *components = j->cinfo.num_components;
    return 0;
}

/* The first APP1 segment that holds EXIF ("Exif\0\0" + TIFF), or NULL. */
const uint8_t *pear_jpeg_exif(const pear_jpeg *j, size_t *len) {
    jpeg_saved_marker_ptr m;
    for (m = j->cinfo.marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
            *len = m->data_length - 6;
            return m->data + 6;
        }
    }
    *len = 0;
    return NULL;
}

/* Decodes into `out` (width * height * 3 bytes of RGB, or 4 of CMYK when
 * `cmyk` is set: libjpeg-turbo cannot convert CMYK to RGB, imread converts
 * it afterwards, and so do we). */
int pear_jpeg_decode(pear_jpeg *j, int cmyk, uint8_t *out, size_t out_len) {
    size_t stride;
    if (setjmp(j->err.jump))
        return -1;
    j->cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_EXT_RGB;
    j->cinfo.dct_method = JDCT_ISLOW;
    j->cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&j->cinfo);
    stride = (size_t)j->cinfo.output_width * (size_t)j->cinfo.output_components;
    if (j->cinfo.output_components != (cmyk ? 4 : 3) || stride * j->cinfo.output_height != out_len) {
        snprintf(j->err.message, sizeof j->err.message, "unexpected output layout %ux%ux%d",
                 j->cinfo.output_width, j->cinfo.output_height, j->cinfo.output_components);
        return -1;
    }
    /* Many rows per call: a 2-row chroma group then needs no spare-row copy. */
    while (j->cinfo.output_scanline < j->cinfo.output_height) {
        JSAMPROW rows[16];
        JDIMENSION n = j->cinfo.output_height - j->cinfo.output_scanline, i;
        if (n > 16)
            n = 16;
        for (i = 0; i < n; i++)
            rows[i] = out + (size_t)(j->cinfo.output_scanline + i) * stride;
        if (jpeg_read_scanlines(&j->cinfo, rows, n) == 0) {
            snprintf(j->err.message, sizeof j->err.message, "decoder stopped at row %u", j->cinfo.output_scanline);
            return -1;
        }
    }
    jpeg_finish_decompress(&j->cinfo);
    return 0;
}
