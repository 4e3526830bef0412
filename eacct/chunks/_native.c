/* The chunker's two inner loops in C, each over a whole block and without the GIL.
 *
 * An upload cuts and hashes every chunk of a year (~130k for 1 GB) on a worker thread while the event loop
 * serves requests. Done in Python, the content-defined cut holds the GIL for every byte it scans, and hashlib
 * releases and retakes the GIL once per chunk; with the loop and the compression thread busy each hand-off
 * can wait milliseconds. Here a block's cuts, and a block's digests, take the GIL once each.
 *
 * Built when a compiler and OpenSSL's headers are there (setup.py); eacct.chunks.digests and
 * eacct.chunks.chunker fall back to hashlib and the fastcdc package otherwise: same cuts, same digests.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <openssl/sha.h>

/* Below this many bytes in all, releasing the GIL costs more than it saves. */
#define RELEASE_GIL_BYTES (64 * 1024)

static PyObject *
sha256_many(PyObject *module, PyObject *pieces)
{
    PyObject *items = PySequence_Fast(pieces, "sha256_many() takes a sequence of bytes-like objects");
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    Py_buffer *views = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(Py_buffer));
    unsigned char **outputs = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(unsigned char *));
    PyObject *digests = PyList_New(count);
    Py_ssize_t held = 0;
    size_t total = 0;
    if (views == NULL || outputs == NULL || digests == NULL) {
        if (views == NULL || outputs == NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(items, held), &views[held], PyBUF_SIMPLE) < 0)
            goto fail;
        PyObject *digest = PyBytes_FromStringAndSize(NULL, SHA256_DIGEST_LENGTH);
        if (digest == NULL) {
            PyBuffer_Release(&views[held]);
            goto fail;
        }
        outputs[held] = (unsigned char *)PyBytes_AS_STRING(digest);
        PyList_SET_ITEM(digests, held, digest);
        total += (size_t)views[held].len;
    }
    /* The digests are not shared with anyone yet and the views keep their buffers alive: safe without the GIL. */
    if (total >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count; i++)
            SHA256(views[i].buf, (size_t)views[i].len, outputs[i]);
        Py_END_ALLOW_THREADS
    } else {
        for (Py_ssize_t i = 0; i < count; i++)
            SHA256(views[i].buf, (size_t)views[i].len, outputs[i]);
    }
    goto done;
fail:
    Py_CLEAR(digests);
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(outputs);
    Py_DECREF(items);
    return digests;
}

static void
hash_spans(const unsigned char *bytes, const size_t *spans, Py_ssize_t count, unsigned char *out)
{
    size_t offset = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        SHA256(bytes + offset, spans[i], out + i * SHA256_DIGEST_LENGTH);
        offset += spans[i];
    }
}

/* The digests of consecutive spans of one buffer, `sizes` bytes each from its start, as one bytes object of
 * 32 bytes per span: a download verifies a decoded block's chunks without a Python object per chunk. */
static PyObject *
sha256_spans(PyObject *module, PyObject *args)
{
    Py_buffer data;
    PyObject *sizes_arg;
    if (!PyArg_ParseTuple(args, "y*O:sha256_spans", &data, &sizes_arg))
        return NULL;
    PyObject *digests = NULL;
    size_t *spans = NULL;
    PyObject *sizes = PySequence_Fast(sizes_arg, "sha256_spans() takes a sequence of sizes");
    if (sizes == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sizes);
    spans = PyMem_RawMalloc((count > 0 ? (size_t)count : 1) * sizeof(size_t));
    if (spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(sizes, i));
        if (size == -1 && PyErr_Occurred())
            goto done;
        if (size < 0 || (size_t)size > (size_t)data.len - total) {
            PyErr_SetString(PyExc_ValueError, "sha256_spans(): the sizes must be non-negative and fit the buffer");
            goto done;
        }
        spans[i] = (size_t)size;
        total += (size_t)size;
    }
    digests = PyBytes_FromStringAndSize(NULL, count * SHA256_DIGEST_LENGTH);
    if (digests == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(digests);
    const unsigned char *bytes = data.buf;
    /* `digests` is not shared with anyone yet and `data` is held: safe without the GIL. */
    if (total >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        hash_spans(bytes, spans, count, out);
        Py_END_ALLOW_THREADS
    } else {
        hash_spans(bytes, spans, count, out);
    }
done:
    Py_XDECREF(sizes);
    PyMem_RawFree(spans);
    PyBuffer_Release(&data);
    return digests;
}

/* FastCDC's cut point, as the fastcdc package computes it: the gear hash from `minimum` on, the strict mask
 * up to `center`, the loose one up to `maximum`; `size` (the bytes left) caps everything. */
static size_t
cut_point(const unsigned char *data, size_t size, const uint32_t *gear, size_t minimum, size_t maximum,
          size_t center, uint32_t mask_strict, uint32_t mask_loose)
{
    uint32_t pattern = 0;
    size_t i = minimum < size ? minimum : size;
    size_t barrier = center < size ? center : size;
    for (; i < barrier; i++) {
        pattern = (pattern >> 1) + gear[data[i]];
        if (!(pattern & mask_strict))
            return i + 1;
    }
    barrier = maximum < size ? maximum : size;
    for (; i < barrier; i++) {
        pattern = (pattern >> 1) + gear[data[i]];
        if (!(pattern & mask_loose))
            return i + 1;
    }
    return i;
}

static PyObject *
cdc_lengths(PyObject *module, PyObject *args)
{
    Py_buffer data, gear_table;
    Py_ssize_t minimum, maximum, center;
    unsigned int mask_strict, mask_loose;
    if (!PyArg_ParseTuple(args, "y*nnnIIy*:cdc_lengths", &data, &minimum, &maximum, &center, &mask_strict,
                          &mask_loose, &gear_table))
        return NULL;
    PyObject *lengths = NULL;
    size_t *cuts = NULL;
    if (gear_table.len != 256 * sizeof(uint32_t) || minimum < 1 || maximum < minimum || center < 0) {
        PyErr_SetString(PyExc_ValueError, "cdc_lengths() needs a 1024-byte gear table and 1 <= minimum <= maximum");
        goto done;
    }
    uint32_t gear[256];
    memcpy(gear, gear_table.buf, sizeof(gear));
    size_t size = (size_t)data.len;
    /* Every chunk but the last is at least `minimum` bytes long. */
    size_t capacity = size / (size_t)minimum + 1;
    cuts = PyMem_RawMalloc(capacity * sizeof(size_t));
    if (cuts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t count = 0;
    const unsigned char *bytes = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (size_t offset = 0; offset < size && count < capacity; count++) {
        size_t length = cut_point(bytes + offset, size - offset, gear, (size_t)minimum, (size_t)maximum,
                                  (size_t)center, mask_strict, mask_loose);
        cuts[count] = length;
        offset += length;
    }
    Py_END_ALLOW_THREADS
    lengths = PyList_New((Py_ssize_t)count);
    if (lengths == NULL)
        goto done;
    for (size_t i = 0; i < count; i++) {
        PyObject *length = PyLong_FromSize_t(cuts[i]);
        if (length == NULL) {
            Py_CLEAR(lengths);
            goto done;
        }
        PyList_SET_ITEM(lengths, (Py_ssize_t)i, length);
    }
done:
    PyMem_RawFree(cuts);
    PyBuffer_Release(&data);
    PyBuffer_Release(&gear_table);
    return lengths;
}

static PyMethodDef native_methods[] = {
    {"sha256_many", sha256_many, METH_O,
     "sha256_many(pieces) -> list of 32-byte digests, one per bytes-like piece, computed without the GIL."},
    {"sha256_spans", sha256_spans, METH_VARARGS,
     "sha256_spans(buffer, sizes) -> the 32-byte digests of the consecutive spans of buffer, `sizes` bytes each, "
     "concatenated; computed without the GIL."},
    {"cdc_lengths", cdc_lengths, METH_VARARGS,
     "cdc_lengths(data, minimum, maximum, center, mask_strict, mask_loose, gear_table) -> lengths of the FastCDC "
     "chunks covering data, computed without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "eacct.chunks._native", "The chunker's inner loops in C, without the GIL.", -1,
    native_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModule_Create(&native_module);
}
