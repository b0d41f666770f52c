/* Copies 1 MiB of a file to another offset of the same file through libblkcopy (offloaded:
 * copy_file_range, shared extents on XFS and Btrfs), then reads the destination back and
 * checks it against the original bytes.
 *
 *   cc copy_range.c $(pkg-config --cflags --libs blkcopy) -o copy_range
 *   ./copy_range /tmp/blkcopy-example.img
 */
#include <blkcopy/blkcopy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024u * 1024u)

static void on_progress(void *arg, uint64_t done, uint64_t total) {
  *(unsigned long long *)arg = (unsigned long long)done;
  (void)total;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "/tmp/blkcopy-example.img";
  /* A 4 MiB file whose first MiB holds a pattern. */
  unsigned char *original = malloc(MIB), *check = malloc(MIB);
  for (unsigned i = 0; i < MIB; ++i) original[i] = (unsigned char)(i * 7 + i / 4096);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(original, 1, MIB, f) != MIB || fseek(f, 4 * MIB - 1, SEEK_SET) || fputc(0, f) == EOF ||
      fclose(f)) {
    perror(path);
    return 1;
  }
  blkcopy_device *dev = NULL;
  int rc = blkcopy_open(path, &dev);
  if (rc) {
    fprintf(stderr, "blkcopy_open %s: %s\n", path, blkcopy_strerror(rc));
    return 1;
  }
  blkcopy_limits limits;
  blkcopy_info(dev, &limits);
  printf("blkcopy %s: %s, %llu bytes, offload up to %llu bytes a copy\n", blkcopy_version(), path,
         (unsigned long long)limits.capacity, (unsigned long long)limits.copy_max_hw_bytes);

  /* Options carry their size (BLKCOPY_COPY_OPTIONS_INIT); here, a progress callback. */
  blkcopy_copy_options opts = BLKCOPY_COPY_OPTIONS_INIT;
  unsigned long long last = 0;
  opts.progress = on_progress;
  opts.progress_arg = &last;
  blkcopy_copy_result r;
  rc = blkcopy_copy(dev, 0, dev, 2 * MIB, MIB, &opts, &r);
  if (rc) {
    fprintf(stderr, "copy failed after %llu bytes: %s\n", (unsigned long long)r.bytes, r.error);
    return 1;
  }
  if (last != r.bytes) {
    fprintf(stderr, "progress ended at %llu, not at %llu\n", last, (unsigned long long)r.bytes);
    return 1;
  }
  printf("copied %llu bytes: offloaded %llu, emulated %llu, read into memory %llu\n",
         (unsigned long long)r.bytes, (unsigned long long)r.offloaded_bytes,
         (unsigned long long)r.emulated_bytes, (unsigned long long)r.host_read_bytes);

  /* Errors are values: a copy past the end is refused and writes nothing. */
  rc = blkcopy_copy(dev, 0, dev, 4 * MIB - 4096, MIB, NULL, &r);
  printf("past the end: %s (%s)\n", blkcopy_strerror(rc), r.error);

  rc = blkcopy_read(dev, 2 * MIB, check, MIB);
  blkcopy_close(dev);
  if (rc || memcmp(check, original, MIB) != 0) {
    fprintf(stderr, "the copy does not match the original data\n");
    return 1;
  }
  printf("the copy matches the original data\n");
  free(original);
  free(check);
  return 0;
}
