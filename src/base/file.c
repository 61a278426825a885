/*
 * file.c — memory maps, whole-file reads, atomic writes, folders.
 *
 * Every write of a file that matters goes through alloy_atomic_*: a temporary file beside the
 * target, fsync, rename, fsync of the folder. A crash at any point leaves either the old file
 * or the complete new one.
 */
#include "alloy/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static alloy_status io_fail(const char *path, const char *what) {
    return alloy_fail(ALLOY_STATUS_IO, "%s: %s%s%s", path, what, *what ? ": " : "", strerror(errno));
}

alloy_status alloy_file_map_open(alloy_file_map *map, const char *path) {
    map->data = NULL;
    map->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_fail(path, "cannot open");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return io_fail(path, "cannot stat");
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return alloy_fail(ALLOY_STATUS_IO, "%s: is a folder, expected a file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return ALLOY_STATUS_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return io_fail(path, "cannot map");
    map->data = p;
    map->size = (size_t)st.st_size;
    return ALLOY_STATUS_OK;
}

void alloy_file_map_close(alloy_file_map *map) {
    if (map->data) munmap((void *)map->data, map->size);
    map->data = NULL;
    map->size = 0;
}

alloy_status alloy_file_read_all(const char *path, char **out, size_t *out_size) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return io_fail(path, "cannot open");
    size_t cap = 4096, n = 0;
    char *buf = alloy_malloc(cap);
    if (!buf) {
        fclose(fp);
        return ALLOY_STATUS_NOMEM;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = alloy_realloc(buf, cap, cap * 2);
            if (!nb) {
                alloy_free(buf);
                fclose(fp);
                return ALLOY_STATUS_NOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    bool err = ferror(fp);
    fclose(fp);
    if (err) {
        alloy_free(buf);
        return alloy_fail(ALLOY_STATUS_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (out_size) *out_size = n;
    return ALLOY_STATUS_OK;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return alloy_strdup(".");
    if (slash == path) return alloy_strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = alloy_malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

alloy_status alloy_atomic_open(alloy_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = alloy_strdup(path);
    size_t n = strlen(path) + 32;
    f->tmp_path = alloy_malloc(n);
    if (!f->path || !f->tmp_path) {
        alloy_free(f->path);
        alloy_free(f->tmp_path);
        return ALLOY_STATUS_NOMEM;
    }
    snprintf(f->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        alloy_status s = io_fail(path, "cannot create");
        alloy_free(f->path);
        alloy_free(f->tmp_path);
        f->path = f->tmp_path = NULL;
        return s;
    }
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        unlink(f->tmp_path);
        alloy_free(f->path);
        alloy_free(f->tmp_path);
        f->path = f->tmp_path = NULL;
        return alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot open stream", path);
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_atomic_write(alloy_atomic_file *f, const void *data, size_t size) {
    if (f->failed) return ALLOY_STATUS_IO;
    if (size && fwrite(data, 1, size, f->fp) != size) {
        f->failed = true;
        return io_fail(f->path, "write failed");
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_atomic_printf(alloy_atomic_file *f, const char *fmt, ...) {
    if (f->failed) return ALLOY_STATUS_IO;
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(f->fp, fmt, ap);
    va_end(ap);
    if (r < 0) {
        f->failed = true;
        return io_fail(f->path, "write failed");
    }
    return ALLOY_STATUS_OK;
}

static void atomic_release(alloy_atomic_file *f) {
    alloy_free(f->path);
    alloy_free(f->tmp_path);
    f->path = f->tmp_path = NULL;
    f->fp = NULL;
}

void alloy_atomic_abort(alloy_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    atomic_release(f);
}

alloy_status alloy_atomic_commit(alloy_atomic_file *f) {
    alloy_status s = ALLOY_STATUS_OK;
    if (f->failed) s = alloy_fail(ALLOY_STATUS_IO, "%s: an earlier write failed; file not replaced", f->path);
    if (s == ALLOY_STATUS_OK && fflush(f->fp) != 0) s = io_fail(f->path, "write failed");
    if (s == ALLOY_STATUS_OK && fsync(fileno(f->fp)) != 0) s = io_fail(f->path, "fsync failed");
    if (fclose(f->fp) != 0 && s == ALLOY_STATUS_OK) s = io_fail(f->path, "close failed");
    f->fp = NULL;
    if (s == ALLOY_STATUS_OK && rename(f->tmp_path, f->path) != 0) s = io_fail(f->path, "rename failed");
    if (s != ALLOY_STATUS_OK) {
        unlink(f->tmp_path);
    } else {
        char *dir = dir_of(f->path);
        if (dir) {
            s = alloy_fsync_dir(dir);
            alloy_free(dir);
        }
    }
    atomic_release(f);
    return s;
}

alloy_status alloy_write_file_atomic(const char *path, const void *data, size_t size) {
    alloy_atomic_file f;
    alloy_status s = alloy_atomic_open(&f, path);
    if (s) return s;
    s = alloy_atomic_write(&f, data, size);
    if (s) {
        alloy_atomic_abort(&f);
        return s;
    }
    return alloy_atomic_commit(&f);
}

alloy_status alloy_fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_fail(path, "cannot open folder");
    int r = fsync(fd);
    close(fd);
    if (r != 0 && errno != EINVAL) return io_fail(path, "fsync of folder failed");
    return ALLOY_STATUS_OK;
}

alloy_status alloy_mkdir_p(const char *path) {
    size_t n = strlen(path);
    char *buf = alloy_malloc(n + 1);
    if (!buf) return ALLOY_STATUS_NOMEM;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                alloy_status s = io_fail(buf, "cannot create folder");
                alloy_free(buf);
                return s;
            }
            buf[i] = c;
        }
    }
    alloy_free(buf);
    if (!alloy_is_dir(path)) return alloy_fail(ALLOY_STATUS_IO, "%s: exists and is not a folder", path);
    return ALLOY_STATUS_OK;
}

bool alloy_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool alloy_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

alloy_status alloy_remove_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return io_fail(path, "cannot open folder");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = alloy_path_join(path, e->d_name);
        if (!p) {
            closedir(d);
            return ALLOY_STATUS_NOMEM;
        }
        unlink(p);
        alloy_free(p);
    }
    closedir(d);
    if (rmdir(path) != 0) return io_fail(path, "cannot remove folder");
    return ALLOY_STATUS_OK;
}

char *alloy_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    bool slash = na > 0 && a[na - 1] != '/';
    char *p = alloy_malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    if (slash) p[na++] = '/';
    memcpy(p + na, b, nb + 1);
    return p;
}
