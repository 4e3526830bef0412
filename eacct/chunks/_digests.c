/* sha256 of many chunks in one call, without the GIL.
 *
 * An upload hashes every chunk it cuts (~130k for a 1 GB year). hashlib releases and retakes the GIL for each
 * one, and with the event loop and the compression thread busy each hand-off can wait milliseconds: hashing
 * a whole block's chunks in one call takes the GIL once. Built when a compiler and OpenSSL's headers are
 * there; eacct.chunks.digests falls back to hashlib otherwise (same digests, slower under load).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

static PyMethodDef digests_methods[] = {
    {"sha256_many", sha256_many, METH_O,
     "sha256_many(pieces) -> list of 32-byte digests, one per bytes-like piece, computed without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef digests_module = {
    PyModuleDef_HEAD_INIT, "eacct.chunks._digests", "sha256 of many chunks in one call, without the GIL.", -1,
    digests_methods,
};

PyMODINIT_FUNC
PyInit__digests(void)
{
    return PyModule_Create(&digests_module);
}
