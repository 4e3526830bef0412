/* A batch of chunks compressed into zstd frames, one after another in the caller's buffer, without the GIL; and
 * a batch of such frames decompressed back into the caller's buffer the same way (downloads).
 *
 * An upload compresses every new chunk of a year (~100k for 1 GB) on worker threads while the event loop reads
 * the body. Compressed one call per chunk, each call hands the GIL back and forth, and with the loop and the
 * cutting thread busy each hand-off can wait milliseconds: the loop then waits for the GIL in turn. Here a batch
 * takes the GIL once, and its frames land in a buffer the caller reuses (no fresh memory per frame).
 *
 * Each frame is a plain zstd frame with its content size, as python-zstandard's ZstdCompressor writes them, so
 * the reader decompresses them alike. Built when libzstd's headers are there (setup.py); eacct.chunks.frames
 * falls back to python-zstandard otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <zstd.h>

/* Below this many bytes in all, releasing the GIL costs more than it saves. */
#define RELEASE_GIL_BYTES (64 * 1024)

typedef struct {
    PyObject_HEAD
    ZSTD_CCtx *context;
    int level;
    int busy; /* a context serves one call at a time */
} Compressor;

static int
compressor_init(Compressor *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"level", NULL};
    int level = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|i", keywords, &level))
        return -1;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        PyErr_Format(PyExc_ValueError, "zstd level must be between %d and %d", ZSTD_minCLevel(), ZSTD_maxCLevel());
        return -1;
    }
    if (self->context == NULL)
        self->context = ZSTD_createCCtx();
    if (self->context == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->level = level;
    return 0;
}

static void
compressor_dealloc(Compressor *self)
{
    ZSTD_freeCCtx(self->context);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
compressor_compress_into(Compressor *self, PyObject *args)
{
    PyObject *pieces;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "Ow*", &pieces, &out))
        return NULL;
    PyObject *items = PySequence_Fast(pieces, "compress_into() takes a sequence of bytes-like objects");
    if (items == NULL) {
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    Py_buffer *views = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(Py_buffer));
    size_t *lengths = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(size_t));
    PyObject *result = NULL;
    Py_ssize_t held = 0;
    size_t bound = 0, total = 0, failure = 0;
    if (views == NULL || lengths == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (self->context == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Compressor was not initialised");
        goto done;
    }
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(items, held), &views[held], PyBUF_SIMPLE) < 0)
            goto done;
        bound += ZSTD_compressBound((size_t)views[held].len);
        total += (size_t)views[held].len;
    }
    if (bound > (size_t)out.len) {
        PyErr_Format(PyExc_ValueError, "the output buffer holds %zd bytes, the frames may need %zu", out.len, bound);
        goto done;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a Compressor serves one call at a time");
        goto done;
    }
    self->busy = 1;
    ZSTD_CCtx *context = self->context;
    int level = self->level;
    char *target = out.buf;
    size_t room = (size_t)out.len, written = 0;
    PyThreadState *state = total >= RELEASE_GIL_BYTES ? PyEval_SaveThread() : NULL;
    failure = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level);
    for (Py_ssize_t i = 0; i < count && !ZSTD_isError(failure); i++) {
        size_t frame = ZSTD_compress2(context, target + written, room - written, views[i].buf, (size_t)views[i].len);
        if (ZSTD_isError(frame)) {
            failure = frame;
            break;
        }
        lengths[i] = frame;
        written += frame;
    }
    if (state != NULL)
        PyEval_RestoreThread(state);
    self->busy = 0;
    if (ZSTD_isError(failure)) {
        PyErr_Format(PyExc_RuntimeError, "zstd compression failed: %s", ZSTD_getErrorName(failure));
        goto done;
    }
    result = PyList_New(count);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *length = PyLong_FromSize_t(lengths[i]);
        if (length == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, length);
    }
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(lengths);
    Py_DECREF(items);
    PyBuffer_Release(&out);
    return result;
}

typedef struct {
    PyObject_HEAD
    ZSTD_DCtx *context;
    int busy;
} Decompressor;

static int
decompressor_init(Decompressor *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "", keywords))
        return -1;
    if (self->context == NULL)
        self->context = ZSTD_createDCtx();
    if (self->context == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
decompressor_dealloc(Decompressor *self)
{
    ZSTD_freeDCtx(self->context);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Sizes from a sequence of ints into a new array; NULL with an exception set when one is not a size. */
static size_t *
sizes_of(PyObject *sequence, Py_ssize_t *count, size_t *total)
{
    PyObject *items = PySequence_Fast(sequence, "sizes must be a sequence of ints");
    if (items == NULL)
        return NULL;
    *count = PySequence_Fast_GET_SIZE(items);
    size_t *sizes = PyMem_Calloc(*count > 0 ? (size_t)*count : 1, sizeof(size_t));
    *total = 0;
    if (sizes == NULL)
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; sizes != NULL && i < *count; i++) {
        sizes[i] = PyLong_AsSize_t(PySequence_Fast_GET_ITEM(items, i));
        if (sizes[i] == (size_t)-1 && PyErr_Occurred()) {
            PyMem_Free(sizes);
            sizes = NULL;
            break;
        }
        *total += sizes[i];
    }
    Py_DECREF(items);
    return sizes;
}

static PyObject *
decompressor_decompress_into(Decompressor *self, PyObject *args)
{
    Py_buffer frames, out;
    PyObject *frame_lengths, *raw_sizes;
    if (!PyArg_ParseTuple(args, "y*OOw*", &frames, &frame_lengths, &raw_sizes, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = 0, raw_count = 0;
    size_t frames_total = 0, raw_total = 0, failed_at = (size_t)-1, failure = 0, got = 0;
    size_t *lengths = sizes_of(frame_lengths, &count, &frames_total);
    size_t *sizes = lengths == NULL ? NULL : sizes_of(raw_sizes, &raw_count, &raw_total);
    if (lengths == NULL || sizes == NULL)
        goto done;
    if (raw_count != count) {
        PyErr_SetString(PyExc_ValueError, "one raw size per frame length is needed");
        goto done;
    }
    if (frames_total > (size_t)frames.len || raw_total > (size_t)out.len) {
        PyErr_Format(PyExc_ValueError, "the frames take %zu bytes of %zd, their content %zu of %zd",
                     frames_total, frames.len, raw_total, out.len);
        goto done;
    }
    if (self->context == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Decompressor was not initialised");
        goto done;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a Decompressor serves one call at a time");
        goto done;
    }
    self->busy = 1;
    ZSTD_DCtx *context = self->context;
    const char *source = frames.buf;
    char *target = out.buf;
    PyThreadState *state = raw_total >= RELEASE_GIL_BYTES ? PyEval_SaveThread() : NULL;
    size_t read = 0, written = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        got = ZSTD_decompressDCtx(context, target + written, sizes[i], source + read, lengths[i]);
        if (ZSTD_isError(got) || got != sizes[i]) {
            failed_at = (size_t)i;
            failure = got;
            break;
        }
        read += lengths[i];
        written += sizes[i];
    }
    if (state != NULL)
        PyEval_RestoreThread(state);
    self->busy = 0;
    if (failed_at != (size_t)-1) {
        if (ZSTD_isError(failure))
            PyErr_Format(PyExc_ValueError, "frame %zu does not decompress: %s", failed_at, ZSTD_getErrorName(failure));
        else
            PyErr_Format(PyExc_ValueError, "frame %zu holds %zu bytes, not %zu", failed_at, got, sizes[failed_at]);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(lengths);
    PyMem_Free(sizes);
    PyBuffer_Release(&frames);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef decompressor_methods[] = {
    {"decompress_into", (PyCFunction)decompressor_decompress_into, METH_VARARGS,
     "decompress_into(frames, frame_lengths, raw_sizes, out)\n\n"
     "Decompress the frames lying one after another in `frames` into `out`, one after another; each must give\n"
     "exactly its raw size (ValueError otherwise). The GIL is released while a large batch decompresses."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecompressorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "eacct.chunks._frames.Decompressor",
    .tp_doc = "Decompressor(): a zstd context for batches of frames; one call at a time.",
    .tp_basicsize = sizeof(Decompressor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)decompressor_init,
    .tp_dealloc = (destructor)decompressor_dealloc,
    .tp_methods = decompressor_methods,
};

static PyObject *
frames_bound(PyObject *module, PyObject *size)
{
    size_t raw = PyLong_AsSize_t(size);
    if (raw == (size_t)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSize_t(ZSTD_compressBound(raw));
}

static PyMethodDef compressor_methods[] = {
    {"compress_into", (PyCFunction)compressor_compress_into, METH_VARARGS,
     "compress_into(pieces, out) -> list of frame lengths\n\n"
     "One zstd frame per piece, written one after another from the start of the writable buffer `out`, which\n"
     "must hold the sum of compress_bound() of the pieces. The GIL is released while a large batch compresses."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CompressorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "eacct.chunks._frames.Compressor",
    .tp_doc = "Compressor(level=1): a zstd context for batches of frames; one call at a time.",
    .tp_basicsize = sizeof(Compressor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)compressor_init,
    .tp_dealloc = (destructor)compressor_dealloc,
    .tp_methods = compressor_methods,
};

static PyMethodDef module_methods[] = {
    {"compress_bound", frames_bound, METH_O,
     "compress_bound(size) -> the most bytes a zstd frame of `size` raw bytes can take"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef frames_module = {
    PyModuleDef_HEAD_INIT, "_frames", "zstd frames of a batch of chunks, compressed and decompressed without the GIL.", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__frames(void)
{
    if (PyType_Ready(&CompressorType) < 0 || PyType_Ready(&DecompressorType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&frames_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Compressor", (PyObject *)&CompressorType) < 0
        || PyModule_AddObjectRef(module, "Decompressor", (PyObject *)&DecompressorType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
