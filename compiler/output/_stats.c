/* cgsc.output._stats: the stat keys of many files in one call, packed as stats.py packs
 * them in Python (byte for byte: stats.py's fallback is the specification, and the tests
 * compare the two). Optional: built by `pip install` where a C compiler is at hand; without
 * it stats.py does the same with os.stat. Why it exists: the incremental cache stats six
 * files per guest, 60,000 for a 10,000-guest repository, and os.stat spends as long
 * building its result object (~1.0 us) as the kernel spends on the call (~1.4 us).
 *
 * packed(dir_fd, paths, nofollow, here=0) -> bytes: for each path, relative to dir_fd
 * (None: the working directory; the first `here` paths: the working directory whatever
 * dir_fd is), the 44 bytes "<QQqqqI" of (st_dev, st_ino, st_size, st_mtime_ns,
 * st_ctime_ns, st_mode); the first `nofollow` paths are not followed if symlinks (lstat),
 * the rest are (stat). Raises what os.stat raises: OSError (with the path), ValueError (a
 * NUL in a path), TypeError; OverflowError for a time in ns beyond 64 bits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD 44

static void put64(unsigned char *out, uint64_t value)
{   /* little-endian whatever the host's order ("<" in stats.py) */
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(value >> (8 * i));
}

static int nanoseconds(int64_t seconds, long nsec, int64_t *out)
{
    int64_t scaled;
    if (__builtin_mul_overflow(seconds, (int64_t)1000000000, &scaled)
            || __builtin_add_overflow(scaled, (int64_t)nsec, out)) {
        PyErr_SetString(PyExc_OverflowError, "a file time beyond 64-bit nanoseconds");
        return -1;
    }
    return 0;
}

static PyObject *packed(PyObject *module, PyObject *args)
{
    PyObject *dir_obj, *paths;
    Py_ssize_t nofollow, here = 0;
    int dir_fd = AT_FDCWD, too_large = 0;
    if (!PyArg_ParseTuple(args, "OO!n|n", &dir_obj, &PyTuple_Type, &paths, &nofollow, &here))
        return NULL;
    if (dir_obj != Py_None) {   /* as os.stat takes it: any C int goes to the kernel (a
                                   negative one: EBADF, or AT_FDCWD), a larger one is an
                                   OverflowError once a path is looked up from it */
        int overflow;
        long value = PyLong_AsLongAndOverflow(dir_obj, &overflow);
        if (value == -1 && PyErr_Occurred())
            return NULL;
        too_large = overflow || value < INT_MIN || value > INT_MAX;
        dir_fd = too_large ? AT_FDCWD : (int)value;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(paths);
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * RECORD);
    if (result == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *path = PyTuple_GET_ITEM(paths, i), *encoded = NULL;
        if (!PyUnicode_Check(path)) {
            PyErr_SetString(PyExc_TypeError, "paths must be str");
            goto fail;
        }
        if (!PyUnicode_FSConverter(path, &encoded))   /* surrogateescape, NUL: ValueError */
            goto fail;
        if (too_large && i >= here) {   /* (os.stat converts the path first) */
            Py_DECREF(encoded);
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
            goto fail;
        }
        struct stat st;
        int failed, error = 0;
        Py_BEGIN_ALLOW_THREADS
        failed = fstatat(i < here ? AT_FDCWD : dir_fd, PyBytes_AS_STRING(encoded), &st,
                         i < nofollow ? AT_SYMLINK_NOFOLLOW : 0);
        if (failed)
            error = errno;   /* before anything else can change it (free() may) */
        Py_END_ALLOW_THREADS
        Py_DECREF(encoded);
        if (failed) {
            errno = error;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
            goto fail;
        }
        int64_t mtime, ctime;
        if (nanoseconds((int64_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, &mtime)
                || nanoseconds((int64_t)st.st_ctim.tv_sec, st.st_ctim.tv_nsec, &ctime))
            goto fail;
        unsigned char *record = out + i * RECORD;
        put64(record, (uint64_t)st.st_dev);
        put64(record + 8, (uint64_t)st.st_ino);
        put64(record + 16, (uint64_t)(int64_t)st.st_size);
        put64(record + 24, (uint64_t)mtime);
        put64(record + 32, (uint64_t)ctime);
        uint32_t mode = (uint32_t)st.st_mode;
        for (int b = 0; b < 4; b++)
            record[40 + b] = (unsigned char)(mode >> (8 * b));
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

static PyMethodDef methods[] = {
    {"packed", packed, METH_VARARGS,
     "packed(dir_fd, paths, nofollow, here=0) -> the stat keys of paths, 44 bytes each"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cgsc.output._stats", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit__stats(void)
{
    return PyModule_Create(&module);
}
