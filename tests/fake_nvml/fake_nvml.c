/* fake_nvml.c: a fake libnvidia-ml.so.1 for gpulse tests; serves deterministic, config-driven GPU data through the real NVML C ABI (see README.md). */
/*
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o libnvidia-ml.so.1 fake_nvml.c -ldl -lpthread
 *
 * Every exported function is named after the NVML symbol it fakes and starts with the same
 * prologue (see enter()/dev_enter()): latency_us sleep, `hang` loop, init check, the
 * not_supported / no_permission lists, handle validation, the `lost` list. The config file
 * is re-read whenever its stat() identity changes. Struct layouts and enum values follow
 * the bindgen output of nvml-wrapper-sys 0.10.0 (NVML API 13); _Static_asserts pin sizes.
 *
 * Field values (nvmlDeviceGetFieldValues) answer as the direct calls do: ECC totals, retired
 * pages, PCIe replays, and NVLink error totals = the per-link counter summed over the links;
 * a field fails as its direct call would by the not_supported / no_permission lists, and the
 * per-GPU `field_not_supported=id,id` key fails single fields (a driver lacking them).
 * Every call is counted per symbol: fake_nvml_calls(sym) in-process, and the
 * $FAKE_NVML_CALL_COUNTS file written at exit. See README.md for every key.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------ NVML ABI subset */

typedef unsigned int nvmlReturn_t;

#define NVML_SUCCESS 0u
#define NVML_ERROR_UNINITIALIZED 1u
#define NVML_ERROR_INVALID_ARGUMENT 2u
#define NVML_ERROR_NOT_SUPPORTED 3u
#define NVML_ERROR_NO_PERMISSION 4u
#define NVML_ERROR_NOT_FOUND 6u
#define NVML_ERROR_INSUFFICIENT_SIZE 7u
#define NVML_ERROR_TIMEOUT 10u
#define NVML_ERROR_GPU_IS_LOST 15u
#define NVML_ERROR_MEMORY 20u
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25u

#define NVML_FEATURE_DISABLED 0u
#define NVML_FEATURE_ENABLED 1u

#define NVML_VALUE_TYPE_UNSIGNED_INT 1u
#define NVML_VALUE_TYPE_UNSIGNED_LONG_LONG 3u

#define NVML_EVENT_TYPE_XID 0x8ull
#define NVML_NO_INSTANCE 0xFFFFFFFFu

#define GIB 1073741824ull

struct fdev {
    unsigned char unused; /* only the address matters: it identifies the device */
};
typedef struct fdev *nvmlDevice_t;

struct fset;
typedef struct fset *nvmlEventSet_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int version;
    unsigned int sensorType;
    int temperature;
} nvmlTemperature_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t; /* = nvmlProcessInfo_v2_t, used by the _v2 and _v3 entry points */

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

typedef union {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    unsigned int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

typedef struct {
    unsigned long long referenceTime;
    unsigned long long violationTime;
} nvmlViolationTime_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

struct fgpm;
typedef struct fgpm *nvmlGpmSample_t;

typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct {
        char *shortName;
        char *longName;
        char *unit;
    } metricInfo;
} nvmlGpmMetric_t;

#define NVML_GPM_METRIC_MAX 210u /* nvml-wrapper-sys 0.10 (NVML API 13); drivers before 13: 98 */

typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1;
    nvmlGpmSample_t sample2;
    nvmlGpmMetric_t metrics[NVML_GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;

typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;

#define NVML_GPM_METRICS_GET_VERSION 1u
#define NVML_GPM_SUPPORT_VERSION 1u

_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t layout");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t layout");
_Static_assert(sizeof(nvmlTemperature_t) == 12, "nvmlTemperature_t layout");
_Static_assert(sizeof(nvmlProcessInfo_v1_t) == 16, "nvmlProcessInfo_v1_t layout");
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "nvmlProcessInfo_t layout");
_Static_assert(sizeof(nvmlProcessUtilizationSample_t) == 32, "nvmlProcessUtilizationSample_t");
_Static_assert(sizeof(nvmlFieldValue_t) == 40, "nvmlFieldValue_t layout");
_Static_assert(sizeof(nvmlEventData_t) == 32, "nvmlEventData_t layout");
_Static_assert(sizeof(nvmlGpmMetric_t) == 40, "nvmlGpmMetric_t layout");
_Static_assert(sizeof(nvmlGpmMetricsGet_t) == 24 + 40 * NVML_GPM_METRIC_MAX, "nvmlGpmMetricsGet_t");
_Static_assert(sizeof(nvmlGpmSupport_t) == 8, "nvmlGpmSupport_t layout");

/* NVML_STRUCT_VERSION(name, ver) = sizeof(struct) | ver << 24 */
#define NVML_MEMORY_V2_VERSION ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
#define NVML_TEMPERATURE_V1_VERSION ((unsigned int)(sizeof(nvmlTemperature_t) | (1u << 24)))

/* ------------------------------------------------------------------ configuration */

#define MAX_GPUS 64 /* benches/compare.sh scales to 64; masks are 64-bit */
#define MAX_MIG 7
#define MAX_XID 64
#define MAX_SETS 64
#define MAX_GPM_SAMPLES 64
#define LIST_LEN 1024
#define MAX_CONFIG_BYTES (1 << 20)

/* Per-GPU numeric fields: X(ENUM, "key", base, step); the default for GPU i is base + step*i. */
#define FIELDS(X)                                                                  \
    X(UTIL, "util", 50, 5)                                                         \
    X(MEM_UTIL, "mem_util", 30, 1)                                                 \
    X(ENC_UTIL, "enc_util", 0, 0)                                                  \
    X(DEC_UTIL, "dec_util", 0, 0)                                                  \
    X(SAMPLING_PERIOD_US, "sampling_period_us", 1000000, 0)                        \
    X(MEM_TOTAL, "mem_total", 85899345920ull, 0)                                   \
    X(MEM_RESERVED, "mem_reserved", 536870912ull, 0)                               \
    X(MEM_USED, "mem_used", 10 * GIB, GIB)                                         \
    X(TEMP, "temp", 40, 1)                                                         \
    X(MEM_TEMP, "mem_temp", 45, 1)                                                 \
    X(TEMP_SHUTDOWN, "temp_shutdown", 92, 0)                                       \
    X(TEMP_SLOWDOWN, "temp_slowdown", 87, 0)                                       \
    X(TEMP_MEM_MAX, "temp_mem_max", 95, 0)                                         \
    X(TEMP_GPU_MAX, "temp_gpu_max", 85, 0)                                         \
    X(POWER_MW, "power_mw", 300000, 1000)                                          \
    X(POWER_LIMIT_MW, "power_limit_mw", 700000, 0)                                 \
    X(POWER_MIN_LIMIT_MW, "power_min_limit_mw", 200000, 0)                         \
    X(POWER_MAX_LIMIT_MW, "power_max_limit_mw", 700000, 0)                         \
    X(ENERGY_MJ, "energy_mj", 1000000000ull, 1000000000ull)                        \
    X(CLOCK_GRAPHICS, "clock_graphics", 1755, 0)                                   \
    X(CLOCK_SM, "clock_sm", 1755, 0)                                               \
    X(CLOCK_MEM, "clock_mem", 2619, 0)                                             \
    X(CLOCK_VIDEO, "clock_video", 1545, 0)                                         \
    X(MAX_CLOCK_GRAPHICS, "max_clock_graphics", 1980, 0)                           \
    X(MAX_CLOCK_SM, "max_clock_sm", 1980, 0)                                       \
    X(MAX_CLOCK_MEM, "max_clock_mem", 2619, 0)                                     \
    X(MAX_CLOCK_VIDEO, "max_clock_video", 1755, 0)                                 \
    X(PSTATE, "pstate", 0, 0)                                                      \
    X(FANS, "fans", 1, 0)                                                          \
    X(FAN_SPEED, "fan_speed", 35, 0)                                               \
    X(THROTTLE, "throttle", 0x1, 0)                                                \
    X(THROTTLE_SUPPORTED, "throttle_supported", 0x1FF, 0)                          \
    X(VIOL_POWER, "violation_power_ns", 2000000000ull, 2000000000ull)              \
    X(VIOL_THERMAL, "violation_thermal_ns", 0, 0)                                  \
    X(VIOL_SYNC_BOOST, "violation_sync_boost_ns", 0, 0)                            \
    X(VIOL_BOARD_LIMIT, "violation_board_limit_ns", 0, 0)                          \
    X(VIOL_LOW_UTIL, "violation_low_util_ns", 0, 0)                                \
    X(VIOL_RELIABILITY, "violation_reliability_ns", 0, 0)                          \
    X(ECC_ENABLED, "ecc_enabled", 1, 0)                                            \
    X(ECC_COR_VOL, "ecc_corrected_volatile", 0, 0)                                 \
    X(ECC_COR_AGG, "ecc_corrected_aggregate", 5, 0)                                \
    X(ECC_UNC_VOL, "ecc_uncorrected_volatile", 0, 0)                               \
    X(ECC_UNC_AGG, "ecc_uncorrected_aggregate", 0, 0)                              \
    X(RETIRED_SBE, "retired_sbe", 0, 0)                                            \
    X(RETIRED_DBE, "retired_dbe", 0, 0)                                            \
    X(RETIRED_PENDING, "retired_pending", 0, 0)                                    \
    X(REMAP_COR, "remap_cor", 0, 0)                                                \
    X(REMAP_UNC, "remap_unc", 0, 0)                                                \
    X(REMAP_PENDING, "remap_pending", 0, 0)                                        \
    X(REMAP_FAILURE, "remap_failure", 0, 0)                                        \
    X(RECOVERY_ACTION, "recovery_action", 0, 0)                                    \
    X(PCIE_GEN, "pcie_gen", 5, 0)                                                  \
    X(PCIE_WIDTH, "pcie_width", 16, 0)                                             \
    X(PCIE_MAX_GEN, "pcie_max_gen", 5, 0)                                          \
    X(PCIE_MAX_WIDTH, "pcie_max_width", 16, 0)                                     \
    X(PCIE_REPLAY, "pcie_replay", 0, 0)                                            \
    X(PCIE_TX_KBPS, "pcie_tx_kbps", 1000, 0)                                       \
    X(PCIE_RX_KBPS, "pcie_rx_kbps", 2000, 0)                                       \
    X(PCI_DOMAIN, "pci_domain", 0, 0)                                              \
    X(PCI_BUS, "pci_bus", 0x10, 1)                                                 \
    X(PCI_DEVICE, "pci_device", 0, 0)                                              \
    X(PCI_DEVICE_ID, "pci_device_id", 0x233010DE, 0)                               \
    X(PCI_SUBSYSTEM_ID, "pci_subsystem_id", 0x16C110DE, 0)                         \
    X(NVLINKS, "nvlinks", 18, 0)                                                   \
    X(NVLINK_VERSION, "nvlink_version", 4, 0)                                      \
    X(NVLINK_REPLAY, "nvlink_replay", 0, 0)                                        \
    X(NVLINK_RECOVERY, "nvlink_recovery", 0, 0)                                    \
    X(NVLINK_CRC_FLIT, "nvlink_crc_flit", 0, 0)                                    \
    X(NVLINK_CRC_DATA, "nvlink_crc_data", 0, 0)                                    \
    X(NVLINK_ECC_DATA, "nvlink_ecc_data", 0, 0)                                    \
    X(PROCESSES, "processes", 1, 0)                                                \
    X(GRAPHICS_PROCESSES, "graphics_processes", 0, 0)                              \
    X(PID_BASE, "pid_base", 1000, 10)                                              \
    X(PROC_SM_UTIL, "proc_sm_util", 40, 0)                                         \
    X(PROC_MEM_UTIL, "proc_mem_util", 20, 0)                                       \
    X(PROC_ENC_UTIL, "proc_enc_util", 0, 0)                                        \
    X(PROC_DEC_UTIL, "proc_dec_util", 0, 0)                                        \
    X(MIG, "mig", 0, 0)                                                            \
    X(MIG_PENDING, "mig_pending", ULLONG_MAX, 0)                                   \
    X(MIG_DEVICES, "mig_devices", 2, 0)                                            \
    X(MIG_MAX, "mig_max", 7, 0)                                                    \
    X(MIG_MEM_TOTAL, "mig_mem_total", 10 * GIB, 0)                                 \
    X(MINOR, "minor", 0, 1)                                                        \
    X(BRAND, "brand", 14, 0)                                                       \
    X(ARCH, "arch", 9, 0)                                                          \
    X(CC_MAJOR, "cc_major", 9, 0)                                                  \
    X(CC_MINOR, "cc_minor", 0, 0)                                                  \
    X(PERSISTENCE, "persistence", 1, 0)                                            \
    X(EVENT_TYPES, "event_types", 0xF, 0)                                         \
    X(GPM, "gpm", 1, 0)                                                            \
    X(GPM_GRAPHICS_UTIL, "gpm_graphics_util", 60, 1)                               \
    X(GPM_SM_UTIL, "gpm_sm_util", 55, 1)                                           \
    X(GPM_SM_OCCUPANCY, "gpm_sm_occupancy", 30, 1)                                 \
    X(GPM_TENSOR_UTIL, "gpm_tensor_util", 40, 1)                                   \
    X(GPM_DRAM_UTIL, "gpm_dram_util", 25, 1)                                       \
    X(GPM_FP64_UTIL, "gpm_fp64_util", 1, 0)                                        \
    X(GPM_FP32_UTIL, "gpm_fp32_util", 12, 0)                                       \
    X(GPM_FP16_UTIL, "gpm_fp16_util", 5, 0)                                        \
    X(GPM_PCIE_TX, "gpm_pcie_tx_mibps", 2, 0)                                      \
    X(GPM_PCIE_RX, "gpm_pcie_rx_mibps", 4, 0)                                      \
    X(GPM_NVLINK_TX, "gpm_nvlink_tx_mibps", 100, 0)                                \
    X(GPM_NVLINK_RX, "gpm_nvlink_rx_mibps", 200, 0)

enum field {
#define X(e, k, b, s) F_##e,
    FIELDS(X)
#undef X
    F_COUNT
};

static const struct {
    const char *key;
    unsigned long long base;
    unsigned long long step;
} k_fields[F_COUNT] = {
#define X(e, k, b, s) {k, b, s},
    FIELDS(X)
#undef X
};

struct gpu_cfg {
    unsigned long long v[F_COUNT];
    char uuid[96];
    char name[96];
    char serial[30];
    char vbios[32];
    char not_supported[LIST_LEN]; /* ",sym,sym," */
    char no_permission[LIST_LEN];
    unsigned long long nvlink_down; /* bit l = link l reported disabled */
    char gpm_not_supported[LIST_LEN]; /* ",id,id,": GPM metric ids that fail */
    char field_not_supported[LIST_LEN]; /* ",id,id,": field ids that fail per entry */
};

struct xid_event {
    unsigned int gpu;
    unsigned long long code;
};

struct config {
    unsigned int gpus;
    char driver_version[80];
    char nvml_version[80];
    int cuda_version;
    unsigned int init_error;
    unsigned long long latency_us;
    unsigned long long config_poll_ms; /* 0: stat the config on every call */
    unsigned long long event_step_ms;  /* nvmlEventSetWait re-checks this often (0: 50) */
    char not_supported[LIST_LEN];
    char no_permission[LIST_LEN];
    char hang[LIST_LEN];
    unsigned long long lost_mask;
    unsigned int nxid;
    struct xid_event xid[MAX_XID];
    char xid_text[LIST_LEN];
    unsigned long long xid_seq;
    struct gpu_cfg gpu[MAX_GPUS];
};

/* ------------------------------------------------------------------ global state (g_lock) */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct config g_cfg;
static int g_cfg_loaded;
static int g_cfg_fd = -1; /* kept open so the loaded file's inode cannot be reused */
static struct {
    int present;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
    struct timespec ctim;
} g_stamp;
static char g_own_dir[PATH_MAX];
static char g_default_path[PATH_MAX + 32];
static int g_paths_done;
static int g_pinned;
static unsigned int g_init_count;
static unsigned long long g_xid_gen;
static char g_xid_key[LIST_LEN + 32];

static struct fdev g_dev[MAX_GPUS];
static struct fdev g_mig[MAX_GPUS][MAX_MIG];

struct fset {
    int used;
    unsigned long long mask[MAX_GPUS];
    unsigned long long seen_gen;
    unsigned int next;
};
static struct fset g_sets[MAX_SETS];

struct fgpm {
    int used;
    int taken;        /* filled by nvmlGpmSampleGet */
    unsigned int gpu; /* whose sample */
    unsigned long long at_ms; /* monotonic */
};
static struct fgpm g_gpm[MAX_GPM_SAMPLES];

/* ------------------------------------------------------------------ small helpers */

static void sleep_us(unsigned long long us)
{
    struct timespec ts = {(time_t)(us / 1000000ull), (long)(us % 1000000ull) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static unsigned long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull;
}

static unsigned long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
}

static void copy_str(char *dst, size_t len, const char *src)
{
    size_t n = strlen(src);
    if (n >= len)
        n = len - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static unsigned long long parse_u64(const char *s)
{
    return strtoull(s, NULL, 0);
}

/* Normalise "a, b ,c" into ",a,b,c," (spaces dropped) so membership is one strstr(). */
static void set_list(char *dst, const char *src)
{
    size_t o = 0;
    dst[o++] = ',';
    for (const char *p = src; *p && o + 2 < LIST_LEN; p++) {
        if (*p == ' ' || *p == '\t')
            continue;
        if (*p == ',' && dst[o - 1] == ',')
            continue;
        dst[o++] = *p;
    }
    if (dst[o - 1] != ',')
        dst[o++] = ',';
    dst[o] = '\0';
}

static int in_list(const char *list, const char *sym)
{
    char needle[160];
    if (list[0] == '\0' || list[1] == '\0')
        return 0;
    snprintf(needle, sizeof needle, ",%s,", sym);
    return strstr(list, needle) != NULL;
}

/* "0,3,5" -> bitmask; indices >= 64 are ignored. */
static unsigned long long parse_mask(const char *s)
{
    unsigned long long m = 0;
    const char *p = s;
    while (*p) {
        char *end;
        unsigned long long v = strtoull(p, &end, 0);
        if (end == p) {
            p++;
            continue;
        }
        if (v < 64)
            m |= 1ull << v;
        p = end;
    }
    return m;
}

static nvmlReturn_t put_str(char *dst, unsigned int len, const char *src)
{
    size_t n = strlen(src);
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (n + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, n + 1);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ config parsing */

static void set_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    c->gpus = 2;
    copy_str(c->driver_version, sizeof c->driver_version, "550.163.01");
    copy_str(c->nvml_version, sizeof c->nvml_version, "12.550.163.01");
    c->cuda_version = 12040;
    for (unsigned int i = 0; i < MAX_GPUS; i++) {
        struct gpu_cfg *g = &c->gpu[i];
        for (int f = 0; f < F_COUNT; f++)
            g->v[f] = k_fields[f].base == ULLONG_MAX ? ULLONG_MAX
                                                     : k_fields[f].base + k_fields[f].step * i;
        snprintf(g->uuid, sizeof g->uuid, "GPU-00000000-fake-4000-8000-%012u", i);
        copy_str(g->name, sizeof g->name, "NVIDIA H100 80GB HBM3");
        snprintf(g->serial, sizeof g->serial, "16543210%05u", i);
        copy_str(g->vbios, sizeof g->vbios, "96.00.99.00.01");
    }
}

/* A per-GPU key (without the "gpuN." prefix). Returns 1 when recognised. */
static int apply_gpu_key(struct gpu_cfg *g, const char *key, const char *val)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (strcmp(key, k_fields[f].key) == 0) {
            g->v[f] = parse_u64(val);
            return 1;
        }
    }
    if (strcmp(key, "uuid") == 0)
        copy_str(g->uuid, sizeof g->uuid, val);
    else if (strcmp(key, "name") == 0)
        copy_str(g->name, sizeof g->name, val);
    else if (strcmp(key, "serial") == 0)
        copy_str(g->serial, sizeof g->serial, val);
    else if (strcmp(key, "vbios") == 0)
        copy_str(g->vbios, sizeof g->vbios, val);
    else if (strcmp(key, "not_supported") == 0)
        set_list(g->not_supported, val);
    else if (strcmp(key, "no_permission") == 0)
        set_list(g->no_permission, val);
    else if (strcmp(key, "nvlink_down") == 0)
        g->nvlink_down = parse_mask(val);
    else if (strcmp(key, "gpm_not_supported") == 0)
        set_list(g->gpm_not_supported, val);
    else if (strcmp(key, "field_not_supported") == 0)
        set_list(g->field_not_supported, val);
    else
        return 0;
    return 1;
}

static void parse_xid(struct config *c, const char *val)
{
    const char *p = val;
    copy_str(c->xid_text, sizeof c->xid_text, val);
    c->nxid = 0;
    while (*p && c->nxid < MAX_XID) {
        char *end;
        unsigned long long gpu = strtoull(p, &end, 0);
        if (end == p) {
            p++;
            continue;
        }
        p = end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != ':')
            continue;
        p++;
        unsigned long long code = strtoull(p, &end, 0);
        if (end == p)
            continue;
        p = end;
        c->xid[c->nxid].gpu = (unsigned int)gpu;
        c->xid[c->nxid].code = code;
        c->nxid++;
    }
}

/* Global keys. Returns 1 when recognised. */
static int apply_global_key(struct config *c, const char *key, const char *val)
{
    if (strcmp(key, "gpus") == 0) {
        unsigned long long n = parse_u64(val);
        c->gpus = (unsigned int)(n > MAX_GPUS ? MAX_GPUS : n);
    } else if (strcmp(key, "driver_version") == 0) {
        copy_str(c->driver_version, sizeof c->driver_version, val);
    } else if (strcmp(key, "nvml_version") == 0) {
        copy_str(c->nvml_version, sizeof c->nvml_version, val);
    } else if (strcmp(key, "cuda_version") == 0) {
        c->cuda_version = (int)strtol(val, NULL, 0);
    } else if (strcmp(key, "init_error") == 0) {
        c->init_error = (unsigned int)parse_u64(val);
    } else if (strcmp(key, "latency_us") == 0) {
        c->latency_us = parse_u64(val);
    } else if (strcmp(key, "config_poll_ms") == 0) {
        c->config_poll_ms = parse_u64(val);
    } else if (strcmp(key, "event_step_ms") == 0) {
        c->event_step_ms = parse_u64(val);
    } else if (strcmp(key, "not_supported") == 0) {
        set_list(c->not_supported, val);
    } else if (strcmp(key, "no_permission") == 0) {
        set_list(c->no_permission, val);
    } else if (strcmp(key, "hang") == 0) {
        set_list(c->hang, val);
    } else if (strcmp(key, "lost") == 0) {
        c->lost_mask = parse_mask(val); /* indices >= 64 = MAX_GPUS ignored there */
    } else if (strcmp(key, "xid") == 0) {
        parse_xid(c, val);
    } else if (strcmp(key, "xid_seq") == 0) {
        c->xid_seq = parse_u64(val);
    } else {
        return 0;
    }
    return 1;
}

/* Pass 0: global keys and bare per-GPU keys (all GPUs). Pass 1: "gpuN.key" overrides. */
static void apply_line(struct config *c, char *line, int pass)
{
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
        return;
    for (char *h = s + 1; *h; h++) { /* inline comment: '#' preceded by blank */
        if (*h == '#' && (h[-1] == ' ' || h[-1] == '\t')) {
            *h = '\0';
            break;
        }
    }
    char *eq = strchr(s, '=');
    if (!eq)
        return;
    *eq = '\0';
    char *key = trim(s);
    char *val = trim(eq + 1);
    if (strncmp(key, "gpu", 3) == 0 && key[3] >= '0' && key[3] <= '9') {
        char *dot;
        unsigned long idx = strtoul(key + 3, &dot, 10);
        if (pass == 1 && *dot == '.' && idx < MAX_GPUS)
            apply_gpu_key(&c->gpu[idx], dot + 1, val);
        return;
    }
    if (pass != 0 || apply_global_key(c, key, val))
        return;
    for (unsigned int i = 0; i < MAX_GPUS; i++)
        apply_gpu_key(&c->gpu[i], key, val);
}

static void parse_config(struct config *c, const char *text)
{
    char line[4096];
    for (int pass = 0; pass < 2; pass++) {
        const char *p = text;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            size_t m = n < sizeof line - 1 ? n : sizeof line - 1;
            memcpy(line, p, m);
            line[m] = '\0';
            apply_line(c, line, pass);
            p += n;
            if (*p == '\n')
                p++;
        }
    }
}

static const char *config_path(void)
{
    const char *env = getenv("FAKE_NVML_CONFIG");
    if (env && *env)
        return env;
    if (!g_paths_done) {
        Dl_info info;
        g_paths_done = 1;
        copy_str(g_own_dir, sizeof g_own_dir, ".");
        if (dladdr(&g_lock, &info) && info.dli_fname && strchr(info.dli_fname, '/')) {
            copy_str(g_own_dir, sizeof g_own_dir, info.dli_fname);
            char *slash = strrchr(g_own_dir, '/');
            if (slash == g_own_dir)
                slash[1] = '\0';
            else
                *slash = '\0';
        }
        snprintf(g_default_path, sizeof g_default_path, "%s/fake_nvml.conf", g_own_dir);
    }
    return g_default_path;
}

static int same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* Re-parse the config when the file appeared, vanished or changed. Caller holds g_lock.
 * With config_poll_ms set, the file is checked at most that often, so benchmarks measure the
 * caller rather than a stat() per NVML call. */
static void reload(void)
{
    static struct timespec last_check;
    if (g_cfg_loaded && g_cfg.config_poll_ms > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long elapsed_ms = (long long)(now.tv_sec - last_check.tv_sec) * 1000 +
                               (now.tv_nsec - last_check.tv_nsec) / 1000000;
        if (elapsed_ms < (long long)g_cfg.config_poll_ms)
            return;
        last_check = now;
    }
    struct stat st;
    const char *path = config_path();
    int present = stat(path, &st) == 0;
    if (g_cfg_loaded && present == g_stamp.present &&
        (!present || (st.st_dev == g_stamp.dev && st.st_ino == g_stamp.ino &&
                      st.st_size == g_stamp.size && same_time(st.st_mtim, g_stamp.mtim) &&
                      same_time(st.st_ctim, g_stamp.ctim))))
        return;

    set_defaults(&g_cfg);
    if (g_cfg_fd >= 0) {
        close(g_cfg_fd);
        g_cfg_fd = -1;
    }
    g_stamp.present = 0;
    if (present) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && fstat(fd, &st) == 0) {
            size_t size = st.st_size > MAX_CONFIG_BYTES ? MAX_CONFIG_BYTES : (size_t)st.st_size;
            char *buf = malloc(size + 1);
            size_t got = 0;
            while (buf && got < size) {
                ssize_t r = read(fd, buf + got, size - got);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            if (buf) {
                buf[got] = '\0';
                parse_config(&g_cfg, buf);
                free(buf);
            }
            g_stamp.present = 1;
            g_stamp.dev = st.st_dev;
            g_stamp.ino = st.st_ino;
            g_stamp.size = st.st_size;
            g_stamp.mtim = st.st_mtim;
            g_stamp.ctim = st.st_ctim;
            g_cfg_fd = fd;
        } else if (fd >= 0) {
            close(fd);
        }
    }
    g_cfg_loaded = 1;

    char key[sizeof g_xid_key];
    snprintf(key, sizeof key, "%s#%llu", g_cfg.xid_text, g_cfg.xid_seq);
    if (g_xid_gen == 0 || strcmp(key, g_xid_key) != 0) {
        copy_str(g_xid_key, sizeof g_xid_key, key);
        g_xid_gen++;
    }
}

/* Keep this copy mapped for the life of the process (a thread stuck in `hang` must never
 * return into an unmapped library after the owner dlclose()d it). Caller holds g_lock. */
static void pin_self(void)
{
    Dl_info info;
    if (g_pinned)
        return;
    g_pinned = 1;
    if (dladdr(&g_lock, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

/* ------------------------------------------------------------------ call counts */

/* Calls per exported symbol, keyed by its __func__ pointer (one static string per function),
 * so tests and benches can count NVML calls: fake_nvml_calls() in-process, and the
 * $FAKE_NVML_CALL_COUNTS file written at exit. Guarded by g_lock. */
#define MAX_SYMS 256
static struct {
    const char *sym;
    unsigned long long n;
} g_calls[MAX_SYMS];

static void count_call(const char *sym)
{
    for (int k = 0; k < MAX_SYMS; k++) {
        if (g_calls[k].sym == sym) {
            g_calls[k].n++;
            return;
        }
        if (!g_calls[k].sym) {
            g_calls[k].sym = sym;
            g_calls[k].n = 1;
            return;
        }
    }
}

/* Not an NVML symbol: the calls made so far to `sym` (NULL: to every symbol). */
EXPORT unsigned long long fake_nvml_calls(const char *sym)
{
    unsigned long long n = 0;
    pthread_mutex_lock(&g_lock);
    for (int k = 0; k < MAX_SYMS && g_calls[k].sym; k++)
        if (!sym || strcmp(sym, g_calls[k].sym) == 0)
            n += g_calls[k].n;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* At exit, "symbol count" lines into $FAKE_NVML_CALL_COUNTS when set. No lock: a thread may be
 * stuck in a `hang`ed call holding none, or exiting mid-call; a count off by one is fine. */
__attribute__((destructor)) static void dump_calls(void)
{
    const char *path = getenv("FAKE_NVML_CALL_COUNTS");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    for (int k = 0; k < MAX_SYMS && g_calls[k].sym; k++)
        fprintf(f, "%s %llu\n", g_calls[k].sym, g_calls[k].n);
    fclose(f);
}

/* ------------------------------------------------------------------ call prologue */

static void unlock_guard(int *held)
{
    if (*held)
        pthread_mutex_unlock(&g_lock);
}

/* Declares the lock guard: g_lock is released whenever the function returns. */
#define GUARD __attribute__((cleanup(unlock_guard))) int held_ = 0

/* latency -> hang -> (lock, reload) -> init check -> global not_supported / no_permission.
 * Returns with g_lock held (and *held set) in every case. */
static nvmlReturn_t enter(const char *sym, int *held, int need_init)
{
    pthread_mutex_lock(&g_lock);
    reload();
    unsigned long long latency = g_cfg.latency_us;
    pthread_mutex_unlock(&g_lock);
    if (latency)
        sleep_us(latency);
    for (;;) {
        pthread_mutex_lock(&g_lock);
        reload();
        if (!in_list(g_cfg.hang, sym))
            break;
        pthread_mutex_unlock(&g_lock);
        sleep_us(10000);
    }
    *held = 1;
    count_call(sym);
    if (need_init && g_init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (in_list(g_cfg.not_supported, sym))
        return NVML_ERROR_NOT_SUPPORTED;
    if (in_list(g_cfg.no_permission, sym))
        return NVML_ERROR_NO_PERMISSION;
    return NVML_SUCCESS;
}

struct ctx {
    unsigned int gpu;
    int mig; /* -1: the physical GPU, else MIG device index */
    const struct gpu_cfg *g;
};

#define CV(c, f) ((c)->g->v[F_##f])
#define V(f) CV(&C, f)

static unsigned int mig_count(const struct gpu_cfg *g)
{
    unsigned long long n = g->v[F_MIG_DEVICES];
    if (n > g->v[F_MIG_MAX])
        n = g->v[F_MIG_MAX];
    return (unsigned int)(n > MAX_MIG ? MAX_MIG : n);
}

static int resolve(nvmlDevice_t h, unsigned int *gpu, int *mig)
{
    uintptr_t a = (uintptr_t)h;
    uintptr_t d0 = (uintptr_t)g_dev, m0 = (uintptr_t)g_mig;
    if (a >= d0 && a < d0 + sizeof g_dev && (a - d0) % sizeof(struct fdev) == 0) {
        *gpu = (unsigned int)((a - d0) / sizeof(struct fdev));
        *mig = -1;
        return 1;
    }
    if (a >= m0 && a < m0 + sizeof g_mig && (a - m0) % sizeof(struct fdev) == 0) {
        size_t k = (a - m0) / sizeof(struct fdev);
        *gpu = (unsigned int)(k / MAX_MIG);
        *mig = (int)(k % MAX_MIG);
        return 1;
    }
    return 0;
}

/* enter() + handle validation + per-GPU lists + lost. MIG handles get NOT_SUPPORTED
 * unless allow_mig. */
static nvmlReturn_t dev_enter(const char *sym, nvmlDevice_t h, int *held, struct ctx *c,
                              int allow_mig)
{
    nvmlReturn_t r = enter(sym, held, 1);
    if (r)
        return r;
    if (!resolve(h, &c->gpu, &c->mig) || c->gpu >= g_cfg.gpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    c->g = &g_cfg.gpu[c->gpu];
    if (c->mig >= 0 && (!CV(c, MIG) || (unsigned int)c->mig >= mig_count(c->g)))
        return NVML_ERROR_INVALID_ARGUMENT;
    if (in_list(c->g->not_supported, sym))
        return NVML_ERROR_NOT_SUPPORTED;
    if (in_list(c->g->no_permission, sym))
        return NVML_ERROR_NO_PERMISSION;
    if (g_cfg.lost_mask & (1ull << c->gpu))
        return NVML_ERROR_GPU_IS_LOST;
    if (c->mig >= 0 && !allow_mig)
        return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

#define SYS()                                                   \
    GUARD;                                                      \
    do {                                                        \
        nvmlReturn_t r_ = enter(__func__, &held_, 1);           \
        if (r_)                                                 \
            return r_;                                          \
    } while (0)

#define DEV_IMPL(h, allow_mig)                                            \
    GUARD;                                                                \
    struct ctx C = {0, -1, NULL};                                         \
    do {                                                                  \
        nvmlReturn_t r_ = dev_enter(__func__, (h), &held_, &C, allow_mig); \
        if (r_)                                                           \
            return r_;                                                    \
    } while (0)

#define DEV(h) DEV_IMPL(h, 0)
#define DEV_OR_MIG(h) DEV_IMPL(h, 1)

#define OUT(p, val)                                     \
    do {                                                \
        if (!(p))                                       \
            return NVML_ERROR_INVALID_ARGUMENT;         \
        *(p) = (val);                                   \
    } while (0)

/* ------------------------------------------------------------------ init / system */

static nvmlReturn_t do_init(const char *sym)
{
    GUARD;
    nvmlReturn_t r = enter(sym, &held_, 0);
    if (r)
        return r;
    if (g_cfg.init_error)
        return g_cfg.init_error;
    pin_self();
    g_init_count++;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(__func__); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init(__func__); }

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    return do_init(__func__);
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    GUARD;
    nvmlReturn_t r = enter(__func__, &held_, 1);
    if (r)
        return r;
    g_init_count--;
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt request issue";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 16: return "GPU requires reset";
    case 17: return "GPU access blocked by the operating system";
    case 18: return "Driver/library version mismatch";
    case 19: return "In use by another client";
    case 20: return "Insufficient Memory";
    case 21: return "No data";
    case 22: return "Requested vgpu operation is not available on target device, becasue ECC is enabled";
    case 23: return "Insufficient resources";
    case 24: return "Frequency not supported";
    case 25: return "Argument version mismatch";
    case 26: return "Deprecated";
    case 27: return "Not ready";
    case 28: return "GPU not found";
    case 29: return "Invalid state";
    case 30: return "Reset type not supported";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    SYS();
    return put_str(version, length, g_cfg.driver_version);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    SYS();
    return put_str(version, length, g_cfg.nvml_version);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    SYS();
    OUT(cudaDriverVersion, g_cfg.cuda_version);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    SYS();
    OUT(cudaDriverVersion, g_cfg.cuda_version);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ device handles */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    SYS();
    OUT(deviceCount, g_cfg.gpus);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    SYS();
    OUT(deviceCount, g_cfg.gpus);
    return NVML_SUCCESS;
}

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device)
{
    if (index >= g_cfg.gpus || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_dev[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    SYS();
    return handle_by_index(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    SYS();
    return handle_by_index(index, device);
}

static void mig_uuid(char *buf, size_t len, unsigned int gpu, int mig)
{
    snprintf(buf, len, "MIG-00000000-fake-4000-8000-%06u%06u", gpu % 1000000u,
             (unsigned int)mig % 1000000u);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    SYS();
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < g_cfg.gpus; i++) {
        const struct gpu_cfg *g = &g_cfg.gpu[i];
        if (strcmp(uuid, g->uuid) == 0) {
            *device = &g_dev[i];
            return NVML_SUCCESS;
        }
        for (unsigned int m = 0; g->v[F_MIG] && m < mig_count(g); m++) {
            char buf[96];
            mig_uuid(buf, sizeof buf, i, (int)m);
            if (strcmp(uuid, buf) == 0) {
                *device = &g_mig[i][m];
                return NVML_SUCCESS;
            }
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device)
{
    SYS();
    if (!serial || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < g_cfg.gpus; i++) {
        if (strcmp(serial, g_cfg.gpu[i].serial) == 0) {
            *device = &g_dev[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

static nvmlReturn_t handle_by_pci(const char *bus_id, nvmlDevice_t *device)
{
    unsigned int dom, bus, dev, fn;
    if (!bus_id || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4) {
        dom = 0;
        if (sscanf(bus_id, "%x:%x.%x", &bus, &dev, &fn) != 3)
            return NVML_ERROR_INVALID_ARGUMENT;
    }
    for (unsigned int i = 0; i < g_cfg.gpus; i++) {
        const struct gpu_cfg *g = &g_cfg.gpu[i];
        if (dom == g->v[F_PCI_DOMAIN] && bus == g->v[F_PCI_BUS] && dev == g->v[F_PCI_DEVICE] &&
            fn == 0) {
            *device = &g_dev[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    SYS();
    return handle_by_pci(pciBusId, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    SYS();
    return handle_by_pci(pciBusId, device);
}

/* ------------------------------------------------------------------ identity */

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    DEV_OR_MIG(device);
    if (C.mig >= 0) {
        char buf[96];
        mig_uuid(buf, sizeof buf, C.gpu, C.mig);
        return put_str(uuid, length, buf);
    }
    return put_str(uuid, length, C.g->uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    DEV_OR_MIG(device);
    if (C.mig >= 0) {
        char buf[160];
        snprintf(buf, sizeof buf, "%s MIG 1g.%llugb", C.g->name, V(MIG_MEM_TOTAL) / GIB);
        return put_str(name, length, buf);
    }
    return put_str(name, length, C.g->name);
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length)
{
    DEV(device);
    return put_str(serial, length, C.g->serial);
}

EXPORT nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t device, char *version,
                                              unsigned int length)
{
    DEV(device);
    return put_str(version, length, C.g->vbios);
}

static nvmlReturn_t fill_pci(const struct ctx *c, nvmlPciInfo_t *pci)
{
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    pci->domain = (unsigned int)CV(c, PCI_DOMAIN);
    pci->bus = (unsigned int)CV(c, PCI_BUS);
    pci->device = (unsigned int)CV(c, PCI_DEVICE);
    pci->pciDeviceId = (unsigned int)CV(c, PCI_DEVICE_ID);
    pci->pciSubSystemId = (unsigned int)CV(c, PCI_SUBSYSTEM_ID);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus & 0xFFu,
             pci->device & 0x1Fu);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0",
             pci->domain & 0xFFFFu, pci->bus & 0xFFu, pci->device & 0x1Fu);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEV(device);
    return fill_pci(&C, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEV(device);
    return fill_pci(&C, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEV(device);
    return fill_pci(&C, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    DEV(device);
    OUT(index, C.gpu);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    DEV(device);
    OUT(minorNumber, (unsigned int)V(MINOR));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, unsigned int *type)
{
    DEV(device);
    OUT(type, (unsigned int)V(BRAND));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch)
{
    DEV(device);
    OUT(arch, (unsigned int)V(ARCH));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major,
                                                       int *minor)
{
    DEV(device);
    if (!major || !minor)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = (int)V(CC_MAJOR);
    *minor = (int)V(CC_MINOR);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, unsigned int *mode)
{
    DEV(device);
    OUT(mode, V(PERSISTENCE) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED);
    return NVML_SUCCESS;
}

/* Not bound by nvml-wrapper-sys 0.10 (the field value NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
 * = 230 is); exported for callers that dlsym it themselves. */
EXPORT nvmlReturn_t nvmlDeviceGetGpuRecoveryAction(nvmlDevice_t device, unsigned int *action)
{
    DEV(device);
    OUT(action, (unsigned int)V(RECOVERY_ACTION));
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ utilization / memory */

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device,
                                                  nvmlUtilization_t *utilization)
{
    DEV(device);
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = (unsigned int)V(UTIL);
    utilization->memory = (unsigned int)V(MEM_UTIL);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t device,
                                                    unsigned int *utilization,
                                                    unsigned int *samplingPeriodUs)
{
    DEV(device);
    if (!utilization || !samplingPeriodUs)
        return NVML_ERROR_INVALID_ARGUMENT;
    *utilization = (unsigned int)V(ENC_UTIL);
    *samplingPeriodUs = (unsigned int)V(SAMPLING_PERIOD_US);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t device,
                                                    unsigned int *utilization,
                                                    unsigned int *samplingPeriodUs)
{
    DEV(device);
    if (!utilization || !samplingPeriodUs)
        return NVML_ERROR_INVALID_ARGUMENT;
    *utilization = (unsigned int)V(DEC_UTIL);
    *samplingPeriodUs = (unsigned int)V(SAMPLING_PERIOD_US);
    return NVML_SUCCESS;
}

/* total / reserved / used / free, for a physical GPU or a MIG device */
static void memory_of(const struct ctx *c, unsigned long long *total,
                      unsigned long long *reserved, unsigned long long *used,
                      unsigned long long *free_)
{
    if (c->mig >= 0) {
        *total = CV(c, MIG_MEM_TOTAL);
        *reserved = 0;
        *used = GIB * (unsigned long long)(c->mig + 1);
    } else {
        *total = CV(c, MEM_TOTAL);
        *reserved = CV(c, MEM_RESERVED);
        *used = CV(c, MEM_USED);
    }
    unsigned long long taken = *reserved + *used;
    *free_ = taken > *total ? 0 : *total - taken;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    DEV_OR_MIG(device);
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != NVML_MEMORY_V2_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memory_of(&C, &memory->total, &memory->reserved, &memory->used, &memory->free);
    return NVML_SUCCESS;
}

/* v1 has no "reserved": like real NVML, reserved memory is reported as used. */
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    DEV_OR_MIG(device);
    unsigned long long reserved;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory_of(&C, &memory->total, &reserved, &memory->used, &memory->free);
    memory->used += reserved;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ thermal / power / clocks */

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, unsigned int sensorType,
                                             unsigned int *temp)
{
    DEV(device);
    if (sensorType != 0) /* NVML_TEMPERATURE_GPU is the only sensor */
        return NVML_ERROR_INVALID_ARGUMENT;
    OUT(temp, (unsigned int)V(TEMP));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature)
{
    DEV(device);
    if (!temperature)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (temperature->version != NVML_TEMPERATURE_V1_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (temperature->sensorType != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    temperature->temperature = (int)V(TEMP);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device,
                                                      unsigned int thresholdType,
                                                      unsigned int *temp)
{
    DEV(device);
    static const enum field map[] = {F_TEMP_SHUTDOWN, F_TEMP_SLOWDOWN, F_TEMP_MEM_MAX,
                                     F_TEMP_GPU_MAX};
    if (thresholdType >= sizeof map / sizeof map[0])
        return NVML_ERROR_NOT_SUPPORTED;
    OUT(temp, (unsigned int)C.g->v[map[thresholdType]]);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    DEV(device);
    OUT(power, (unsigned int)V(POWER_MW));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit)
{
    DEV(device);
    OUT(limit, (unsigned int)V(POWER_LIMIT_MW));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit)
{
    DEV(device);
    OUT(limit, (unsigned int)V(POWER_LIMIT_MW));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device,
                                                             unsigned int *defaultLimit)
{
    DEV(device);
    OUT(defaultLimit, (unsigned int)V(POWER_LIMIT_MW));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device,
                                                                 unsigned int *minLimit,
                                                                 unsigned int *maxLimit)
{
    DEV(device);
    if (!minLimit || !maxLimit)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minLimit = (unsigned int)V(POWER_MIN_LIMIT_MW);
    *maxLimit = (unsigned int)V(POWER_MAX_LIMIT_MW);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                        unsigned long long *energy)
{
    DEV(device);
    OUT(energy, V(ENERGY_MJ));
    return NVML_SUCCESS;
}

/* NVML_CLOCK_GRAPHICS=0, SM=1, MEM=2, VIDEO=3 */
static nvmlReturn_t clock_value(const struct ctx *c, unsigned int type, int max,
                                unsigned int *out)
{
    static const enum field cur[] = {F_CLOCK_GRAPHICS, F_CLOCK_SM, F_CLOCK_MEM, F_CLOCK_VIDEO};
    static const enum field top[] = {F_MAX_CLOCK_GRAPHICS, F_MAX_CLOCK_SM, F_MAX_CLOCK_MEM,
                                     F_MAX_CLOCK_VIDEO};
    if (type >= 4 || !out)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = (unsigned int)c->g->v[max ? top[type] : cur[type]];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, unsigned int type,
                                           unsigned int *clock)
{
    DEV(device);
    return clock_value(&C, type, 0, clock);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, unsigned int type,
                                              unsigned int *clock)
{
    DEV(device);
    return clock_value(&C, type, 1, clock);
}

/* clockId: CURRENT=0, APP_CLOCK_TARGET=1, APP_CLOCK_DEFAULT=2 -> current; CUSTOMER_BOOST_MAX=3 -> max */
EXPORT nvmlReturn_t nvmlDeviceGetClock(nvmlDevice_t device, unsigned int clockType,
                                       unsigned int clockId, unsigned int *clockMHz)
{
    DEV(device);
    if (clockId >= 4)
        return NVML_ERROR_INVALID_ARGUMENT;
    return clock_value(&C, clockType, clockId == 3, clockMHz);
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, unsigned int *pState)
{
    DEV(device);
    OUT(pState, (unsigned int)V(PSTATE));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerState(nvmlDevice_t device, unsigned int *pState)
{
    DEV(device);
    OUT(pState, (unsigned int)V(PSTATE));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t device, unsigned int *numFans)
{
    DEV(device);
    OUT(numFans, (unsigned int)V(FANS));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t device, unsigned int fan,
                                             unsigned int *speed)
{
    DEV(device);
    if (V(FANS) == 0)
        return NVML_ERROR_NOT_SUPPORTED;
    if (fan >= V(FANS))
        return NVML_ERROR_INVALID_ARGUMENT;
    OUT(speed, (unsigned int)V(FAN_SPEED));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed)
{
    DEV(device);
    if (V(FANS) == 0)
        return NVML_ERROR_NOT_SUPPORTED;
    OUT(speed, (unsigned int)V(FAN_SPEED));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                              unsigned long long *reasons)
{
    DEV(device);
    OUT(reasons, V(THROTTLE));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                           unsigned long long *reasons)
{
    DEV(device);
    OUT(reasons, V(THROTTLE));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t device,
                                                                unsigned long long *reasons)
{
    DEV(device);
    OUT(reasons, V(THROTTLE_SUPPORTED));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device,
                                                             unsigned long long *reasons)
{
    DEV(device);
    OUT(reasons, V(THROTTLE_SUPPORTED));
    return NVML_SUCCESS;
}

#define VIOLATION_REFERENCE_US 1700000000000000ull

/* NVML_PERF_POLICY_POWER=0, THERMAL=1, SYNC_BOOST=2, BOARD_LIMIT=3, LOW_UTILIZATION=4, RELIABILITY=5 */
EXPORT nvmlReturn_t nvmlDeviceGetViolationStatus(nvmlDevice_t device, unsigned int perfPolicyType,
                                                 nvmlViolationTime_t *violTime)
{
    DEV(device);
    static const enum field map[] = {F_VIOL_POWER,       F_VIOL_THERMAL,  F_VIOL_SYNC_BOOST,
                                     F_VIOL_BOARD_LIMIT, F_VIOL_LOW_UTIL, F_VIOL_RELIABILITY};
    if (perfPolicyType >= sizeof map / sizeof map[0])
        return NVML_ERROR_NOT_SUPPORTED;
    if (!violTime)
        return NVML_ERROR_INVALID_ARGUMENT;
    violTime->referenceTime = VIOLATION_REFERENCE_US;
    violTime->violationTime = C.g->v[map[perfPolicyType]];
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ ECC / pages / rows */

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, unsigned int errorType,
                                                unsigned int counterType,
                                                unsigned long long *eccCounts)
{
    DEV(device);
    static const enum field map[2][2] = {{F_ECC_COR_VOL, F_ECC_COR_AGG},
                                         {F_ECC_UNC_VOL, F_ECC_UNC_AGG}};
    if (errorType > 1 || counterType > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    OUT(eccCounts, C.g->v[map[errorType][counterType]]);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, unsigned int *current,
                                         unsigned int *pending)
{
    DEV(device);
    if (!current || !pending)
        return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = V(ECC_ENABLED) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

/* cause: MULTIPLE_SINGLE_BIT_ECC_ERRORS=0, DOUBLE_BIT_ECC_ERROR=1 */
static nvmlReturn_t retired_pages(const struct ctx *c, unsigned int cause, unsigned int *count,
                                  unsigned long long *addresses, unsigned long long *timestamps)
{
    if (cause > 1 || !count)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = (unsigned int)(cause ? CV(c, RETIRED_DBE) : CV(c, RETIRED_SBE));
    if (*count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    if (n && !addresses)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int k = 0; k < n; k++) {
        addresses[k] = 0x100000ull * (cause + 1) + 0x1000ull * k;
        if (timestamps)
            timestamps[k] = 1700000000ull + k;
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, unsigned int cause,
                                              unsigned int *pageCount,
                                              unsigned long long *addresses)
{
    DEV(device);
    return retired_pages(&C, cause, pageCount, addresses, NULL);
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPages_v2(nvmlDevice_t device, unsigned int cause,
                                                 unsigned int *pageCount,
                                                 unsigned long long *addresses,
                                                 unsigned long long *timestamps)
{
    DEV(device);
    return retired_pages(&C, cause, pageCount, addresses, timestamps);
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device,
                                                           unsigned int *isPending)
{
    DEV(device);
    OUT(isPending, V(RETIRED_PENDING) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows,
                                              unsigned int *uncRows, unsigned int *isPending,
                                              unsigned int *failureOccurred)
{
    DEV(device);
    if (!corrRows || !uncRows || !isPending || !failureOccurred)
        return NVML_ERROR_INVALID_ARGUMENT;
    *corrRows = (unsigned int)V(REMAP_COR);
    *uncRows = (unsigned int)V(REMAP_UNC);
    *isPending = (unsigned int)V(REMAP_PENDING);
    *failureOccurred = (unsigned int)V(REMAP_FAILURE);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ field values */

/* How the direct call `sym` would be refused by the not_supported / no_permission lists, in
 * enter()'s and dev_enter()'s order: a field backed by the same reading fails as that call
 * does, as on a real driver, so listing a symbol changes a reading whichever way it is read. */
static nvmlReturn_t refused(const struct ctx *c, const char *sym)
{
    if (in_list(g_cfg.not_supported, sym))
        return NVML_ERROR_NOT_SUPPORTED;
    if (in_list(g_cfg.no_permission, sym))
        return NVML_ERROR_NO_PERMISSION;
    if (in_list(c->g->not_supported, sym))
        return NVML_ERROR_NOT_SUPPORTED;
    if (in_list(c->g->no_permission, sym))
        return NVML_ERROR_NO_PERMISSION;
    return NVML_SUCCESS;
}

/* An NVLink error-counter total (nvml.h NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL): the sum of the
 * per-link counter over the GPU's links, as nvmlDeviceGetNvLinkErrorCounter answers it. */
static nvmlReturn_t nvlink_total(const struct ctx *c, enum field counter, unsigned long long *v)
{
    nvmlReturn_t r = refused(c, "nvmlDeviceGetNvLinkErrorCounter");
    if (r)
        return r;
    if (CV(c, NVLINKS) == 0)
        return NVML_ERROR_NOT_SUPPORTED;
    *v = CV(c, NVLINKS) * c->g->v[counter];
    return NVML_SUCCESS;
}

static void field_value(const struct ctx *c, nvmlFieldValue_t *fv, long long ts)
{
    unsigned int type = NVML_VALUE_TYPE_UNSIGNED_INT;
    unsigned long long v = 0;
    nvmlReturn_t r = NVML_SUCCESS;
    char id[16] = "";
    if (c->g->field_not_supported[0]) /* no snprintf per field when the list is empty */
        snprintf(id, sizeof id, "%u", fv->fieldId);
    if (id[0] && in_list(c->g->field_not_supported, id))
        r = NVML_ERROR_NOT_SUPPORTED;
    else switch (fv->fieldId) {
    case 3: case 4: case 5: case 6: {            /* NVML_FI_DEV_ECC_{SBE,DBE}_{VOL,AGG}_TOTAL */
        static const enum field map[] = {F_ECC_COR_VOL, F_ECC_UNC_VOL, F_ECC_COR_AGG,
                                         F_ECC_UNC_AGG};
        r = refused(c, "nvmlDeviceGetTotalEccErrors");
        v = c->g->v[map[fv->fieldId - 3]];
        type = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        break;
    }
    case 29: case 30:                            /* NVML_FI_DEV_RETIRED_{SBE,DBE}: page counts */
        r = refused(c, "nvmlDeviceGetRetiredPages");
        if (!r)
            r = refused(c, "nvmlDeviceGetRetiredPages_v2");
        v = fv->fieldId == 29 ? CV(c, RETIRED_SBE) : CV(c, RETIRED_DBE);
        break;
    case 31:                                     /* NVML_FI_DEV_RETIRED_PENDING */
        r = refused(c, "nvmlDeviceGetRetiredPagesPendingStatus");
        v = CV(c, RETIRED_PENDING) ? 1 : 0;
        break;
    case 38: /* NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL */
    case 45: /* NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL */
    case 52: /* NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL */
    case 59: /* NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL */
        r = nvlink_total(c, fv->fieldId == 38   ? F_NVLINK_CRC_FLIT
                            : fv->fieldId == 45 ? F_NVLINK_CRC_DATA
                            : fv->fieldId == 52 ? F_NVLINK_REPLAY
                                                : F_NVLINK_RECOVERY,
                         &v);
        type = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        break;
    case 82: v = CV(c, MEM_TEMP); break;           /* NVML_FI_DEV_MEMORY_TEMP */
    case 83:                                        /* NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION */
        v = CV(c, ENERGY_MJ);
        type = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        break;
    case 91: v = CV(c, NVLINKS); break;            /* NVML_FI_DEV_NVLINK_LINK_COUNT */
    case 94:                                        /* NVML_FI_DEV_PCIE_REPLAY_COUNTER */
        r = refused(c, "nvmlDeviceGetPcieReplayCounter");
        v = CV(c, PCIE_REPLAY);
        break;
    case 142: v = CV(c, REMAP_COR); break;         /* NVML_FI_DEV_REMAPPED_COR */
    case 143: v = CV(c, REMAP_UNC); break;         /* NVML_FI_DEV_REMAPPED_UNC */
    case 144: v = CV(c, REMAP_PENDING); break;     /* NVML_FI_DEV_REMAPPED_PENDING */
    case 145: v = CV(c, REMAP_FAILURE); break;     /* NVML_FI_DEV_REMAPPED_FAILURE */
    case 230: v = CV(c, RECOVERY_ACTION); break;   /* NVML_FI_DEV_GET_GPU_RECOVERY_ACTION */
    default:
        r = NVML_ERROR_NOT_SUPPORTED;
        break;
    }
    fv->timestamp = ts;
    fv->latencyUsec = 0;
    fv->nvmlReturn = r;
    if (r)
        return;
    fv->valueType = type;
    memset(&fv->value, 0, sizeof fv->value);
    if (type == NVML_VALUE_TYPE_UNSIGNED_INT)
        fv->value.uiVal = (unsigned int)v;
    else
        fv->value.ullVal = v;
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount,
                                             nvmlFieldValue_t *values)
{
    DEV(device);
    if (valuesCount < 0 || (valuesCount > 0 && !values))
        return NVML_ERROR_INVALID_ARGUMENT;
    long long ts = (long long)now_us();
    for (int k = 0; k < valuesCount; k++)
        field_value(&C, &values[k], ts);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ PCIe */

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t device,
                                                        unsigned int *currLinkGen)
{
    DEV(device);
    OUT(currLinkGen, (unsigned int)V(PCIE_GEN));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device,
                                                   unsigned int *currLinkWidth)
{
    DEV(device);
    OUT(currLinkWidth, (unsigned int)V(PCIE_WIDTH));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t device,
                                                       unsigned int *maxLinkGen)
{
    DEV(device);
    OUT(maxLinkGen, (unsigned int)V(PCIE_MAX_GEN));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device,
                                                  unsigned int *maxLinkWidth)
{
    DEV(device);
    OUT(maxLinkWidth, (unsigned int)V(PCIE_MAX_WIDTH));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *value)
{
    DEV(device);
    OUT(value, (unsigned int)V(PCIE_REPLAY));
    return NVML_SUCCESS;
}

/* counter: NVML_PCIE_UTIL_TX_BYTES=0, RX_BYTES=1; value in KB/s */
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t device, unsigned int counter,
                                                unsigned int *value)
{
    DEV(device);
    if (counter > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    OUT(value, (unsigned int)(counter ? V(PCIE_RX_KBPS) : V(PCIE_TX_KBPS)));
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ NVLink */

static nvmlReturn_t link_check(const struct ctx *c, unsigned int link)
{
    if (CV(c, NVLINKS) == 0)
        return NVML_ERROR_NOT_SUPPORTED;
    if (link >= CV(c, NVLINKS))
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link,
                                             unsigned int *isActive)
{
    DEV(device);
    nvmlReturn_t r = link_check(&C, link);
    if (r)
        return r;
    int down = link < 64 && (C.g->nvlink_down >> link) & 1ull;
    OUT(isActive, down ? NVML_FEATURE_DISABLED : NVML_FEATURE_ENABLED);
    return NVML_SUCCESS;
}

/* counter: DL_REPLAY=0, DL_RECOVERY=1, DL_CRC_FLIT=2, DL_CRC_DATA=3, DL_ECC_DATA=4 */
EXPORT nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t device, unsigned int link,
                                                    unsigned int counter,
                                                    unsigned long long *counterValue)
{
    DEV(device);
    static const enum field map[] = {F_NVLINK_REPLAY, F_NVLINK_RECOVERY, F_NVLINK_CRC_FLIT,
                                     F_NVLINK_CRC_DATA, F_NVLINK_ECC_DATA};
    nvmlReturn_t r = link_check(&C, link);
    if (r)
        return r;
    if (counter >= sizeof map / sizeof map[0])
        return NVML_ERROR_INVALID_ARGUMENT;
    OUT(counterValue, C.g->v[map[counter]]);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkVersion(nvmlDevice_t device, unsigned int link,
                                               unsigned int *version)
{
    DEV(device);
    nvmlReturn_t r = link_check(&C, link);
    if (r)
        return r;
    OUT(version, (unsigned int)V(NVLINK_VERSION));
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ processes */

/* Two-call count protocol shared by every *RunningProcesses* entry point.
 * v1: buf is nvmlProcessInfo_v1_t[], else nvmlProcessInfo_t[]. */
static nvmlReturn_t list_processes(const struct ctx *c, int graphics, unsigned int *count,
                                   void *buf, int v1)
{
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = c->mig >= 0 ? 0
                                 : (unsigned int)(graphics ? CV(c, GRAPHICS_PROCESSES)
                                                           : CV(c, PROCESSES));
    unsigned int pid0 = (unsigned int)CV(c, PID_BASE) + (graphics ? 1000u : 0u);
    if (*count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    if (n && !buf)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int k = 0; k < n; k++) {
        unsigned long long mem = (8ull + k) * GIB;
        if (v1) {
            nvmlProcessInfo_v1_t *p = (nvmlProcessInfo_v1_t *)buf + k;
            p->pid = pid0 + k;
            p->usedGpuMemory = mem;
        } else {
            nvmlProcessInfo_t *p = (nvmlProcessInfo_t *)buf + k;
            p->pid = pid0 + k;
            p->usedGpuMemory = mem;
            p->gpuInstanceId = NVML_NO_INSTANCE;
            p->computeInstanceId = NVML_NO_INSTANCE;
        }
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                            unsigned int *infoCount,
                                                            nvmlProcessInfo_t *infos)
{
    DEV_OR_MIG(device);
    return list_processes(&C, 0, infoCount, infos, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device,
                                                            unsigned int *infoCount,
                                                            nvmlProcessInfo_t *infos)
{
    DEV_OR_MIG(device);
    return list_processes(&C, 0, infoCount, infos, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device,
                                                         unsigned int *infoCount,
                                                         nvmlProcessInfo_v1_t *infos)
{
    DEV_OR_MIG(device);
    return list_processes(&C, 0, infoCount, infos, 1);
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device,
                                                             unsigned int *infoCount,
                                                             nvmlProcessInfo_t *infos)
{
    DEV_OR_MIG(device);
    return list_processes(&C, 1, infoCount, infos, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device,
                                                             unsigned int *infoCount,
                                                             nvmlProcessInfo_t *infos)
{
    DEV_OR_MIG(device);
    return list_processes(&C, 1, infoCount, infos, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device,
                                                          unsigned int *infoCount,
                                                          nvmlProcessInfo_v1_t *infos)
{
    DEV_OR_MIG(device);
    return list_processes(&C, 1, infoCount, infos, 1);
}

/* Like real NVML: NOT_FOUND when there is no sample newer than lastSeenTimeStamp (so a GPU
 * with no compute process answers NOT_FOUND, not an empty list). */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *processSamplesCount,
                                                    unsigned long long lastSeenTimeStamp)
{
    DEV(device);
    unsigned long long ts = now_us();
    unsigned int n = (unsigned int)V(PROCESSES);
    if (!processSamplesCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (n == 0 || lastSeenTimeStamp >= ts)
        return NVML_ERROR_NOT_FOUND;
    if (!utilization || *processSamplesCount < n) {
        *processSamplesCount = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *processSamplesCount = n;
    for (unsigned int k = 0; k < n; k++) {
        nvmlProcessUtilizationSample_t *s = &utilization[k];
        s->pid = (unsigned int)V(PID_BASE) + k;
        s->timeStamp = ts;
        s->smUtil = (unsigned int)V(PROC_SM_UTIL);
        s->memUtil = (unsigned int)V(PROC_MEM_UTIL);
        s->encUtil = (unsigned int)V(PROC_ENC_UTIL);
        s->decUtil = (unsigned int)V(PROC_DEC_UTIL);
    }
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ MIG */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                         unsigned int *pendingMode)
{
    DEV(device);
    if (!currentMode || !pendingMode)
        return NVML_ERROR_INVALID_ARGUMENT;
    *currentMode = V(MIG) ? 1u : 0u;
    *pendingMode = V(MIG_PENDING) == ULLONG_MAX ? *currentMode : (V(MIG_PENDING) ? 1u : 0u);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    DEV(device);
    OUT(count, (unsigned int)V(MIG_MAX));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice)
{
    DEV(device);
    if (!migDevice || index >= V(MIG_MAX))
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!V(MIG) || index >= mig_count(C.g))
        return NVML_ERROR_NOT_FOUND;
    *migDevice = &g_mig[C.gpu][index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    DEV_OR_MIG(device);
    OUT(isMigDevice, C.mig >= 0 ? 1u : 0u);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    DEV_OR_MIG(device);
    if (C.mig < 0)
        return NVML_ERROR_NOT_SUPPORTED;
    OUT(id, (unsigned int)C.mig + 1u);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    DEV_OR_MIG(device);
    if (C.mig < 0)
        return NVML_ERROR_NOT_SUPPORTED;
    OUT(id, 0u);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice,
                                                                 nvmlDevice_t *device)
{
    DEV_OR_MIG(migDevice);
    if (C.mig < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    OUT(device, &g_dev[C.gpu]);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ events */

static struct fset *lookup_set(nvmlEventSet_t set)
{
    uintptr_t a = (uintptr_t)set, s0 = (uintptr_t)g_sets;
    if (a < s0 || a >= s0 + sizeof g_sets || (a - s0) % sizeof(struct fset) != 0)
        return NULL;
    struct fset *s = &g_sets[(a - s0) / sizeof(struct fset)];
    return s->used ? s : NULL;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    SYS();
    if (!set)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (int k = 0; k < MAX_SETS; k++) {
        if (!g_sets[k].used) {
            memset(&g_sets[k], 0, sizeof g_sets[k]);
            g_sets[k].used = 1;
            *set = &g_sets[k];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_MEMORY;
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    SYS();
    struct fset *s = lookup_set(set);
    if (!s)
        return NVML_ERROR_INVALID_ARGUMENT;
    s->used = 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                     unsigned long long *eventTypes)
{
    DEV(device);
    OUT(eventTypes, V(EVENT_TYPES));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes,
                                             nvmlEventSet_t set)
{
    DEV(device);
    struct fset *s = lookup_set(set);
    if (!s)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (eventTypes & ~V(EVENT_TYPES))
        return NVML_ERROR_NOT_SUPPORTED;
    s->mask[C.gpu] |= eventTypes;
    return NVML_SUCCESS;
}

/* Next queued Xid event for this set, if any. Caller holds g_lock. */
static int next_event(struct fset *s, nvmlEventData_t *data)
{
    if (s->seen_gen != g_xid_gen) {
        s->seen_gen = g_xid_gen;
        s->next = 0;
    }
    while (s->next < g_cfg.nxid) {
        const struct xid_event *e = &g_cfg.xid[s->next++];
        if (e->gpu < g_cfg.gpus && (s->mask[e->gpu] & NVML_EVENT_TYPE_XID)) {
            data->device = &g_dev[e->gpu];
            data->eventType = NVML_EVENT_TYPE_XID;
            data->eventData = e->code;
            data->gpuInstanceId = NVML_NO_INSTANCE;
            data->computeInstanceId = NVML_NO_INSTANCE;
            return 1;
        }
    }
    return 0;
}

static nvmlReturn_t event_wait(const char *sym, nvmlEventSet_t set, nvmlEventData_t *data,
                               unsigned int timeoutms)
{
    GUARD;
    nvmlReturn_t r = enter(sym, &held_, 1);
    if (r)
        return r;
    if (!data)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long deadline = mono_ms() + timeoutms;
    for (;;) {
        struct fset *s = lookup_set(set);
        if (!s)
            return NVML_ERROR_INVALID_ARGUMENT;
        if (next_event(s, data))
            return NVML_SUCCESS;
        unsigned long long now = mono_ms();
        if (now >= deadline)
            return NVML_ERROR_TIMEOUT;
        unsigned long long left = deadline - now;
        /* 50 ms steps by default: prompt enough for tests, and cheap enough that footprint
         * runs measure gpulse rather than this loop. A real driver blocks in the kernel until
         * an event or the timeout; event_step_ms >= the timeout does the same (benches/idle.sh
         * sets it, so idle CPU is gpulse's own). */
        unsigned long long step = g_cfg.event_step_ms ? g_cfg.event_step_ms : 50;
        pthread_mutex_unlock(&g_lock);
        held_ = 0;
        sleep_us((left < step ? left : step) * 1000ull);
        pthread_mutex_lock(&g_lock);
        held_ = 1;
        reload();
        if (g_init_count == 0)
            return NVML_ERROR_UNINITIALIZED;
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeoutms)
{
    return event_wait(__func__, set, data, timeoutms);
}

EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data,
                                     unsigned int timeoutms)
{
    return event_wait(__func__, set, data, timeoutms);
}

/* ------------------------------------------------------------------ GPM */

static struct fgpm *lookup_gpm(nvmlGpmSample_t sample)
{
    uintptr_t a = (uintptr_t)sample, s0 = (uintptr_t)g_gpm;
    if (a < s0 || a >= s0 + sizeof g_gpm || (a - s0) % sizeof(struct fgpm) != 0)
        return NULL;
    struct fgpm *s = &g_gpm[(a - s0) / sizeof(struct fgpm)];
    return s->used ? s : NULL;
}

EXPORT nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *gpmSupport)
{
    DEV(device);
    if (!gpmSupport)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (gpmSupport->version != NVML_GPM_SUPPORT_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    gpmSupport->isSupportedDevice = V(GPM) ? 1u : 0u;
    return NVML_SUCCESS;
}

/* A fixed pool, like the event sets: a caller that leaks samples runs out (NVML_ERROR_MEMORY). */
EXPORT nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *gpmSample)
{
    SYS();
    if (!gpmSample)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (int k = 0; k < MAX_GPM_SAMPLES; k++) {
        if (!g_gpm[k].used) {
            memset(&g_gpm[k], 0, sizeof g_gpm[k]);
            g_gpm[k].used = 1;
            *gpmSample = &g_gpm[k];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_MEMORY;
}

EXPORT nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t gpmSample)
{
    SYS();
    struct fgpm *s = lookup_gpm(gpmSample);
    if (!s)
        return NVML_ERROR_INVALID_ARGUMENT;
    s->used = 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t gpmSample)
{
    DEV(device);
    struct fgpm *s = lookup_gpm(gpmSample);
    if (!s)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!V(GPM))
        return NVML_ERROR_NOT_SUPPORTED;
    s->taken = 1;
    s->gpu = C.gpu;
    s->at_ms = mono_ms();
    return NVML_SUCCESS;
}

/* GPM on a MIG GPU instance is not faked. */
EXPORT nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t device, unsigned int gpuInstanceId,
                                        nvmlGpmSample_t gpmSample)
{
    DEV(device);
    (void)gpuInstanceId;
    (void)gpmSample;
    return NVML_ERROR_NOT_SUPPORTED;
}

static const struct {
    unsigned int id;
    enum field field;
    char *short_name;
    char *unit;
} k_gpm_metrics[] = {
    {1, F_GPM_GRAPHICS_UTIL, "gr_util", "%"},   {2, F_GPM_SM_UTIL, "sm_util", "%"},
    {3, F_GPM_SM_OCCUPANCY, "sm_occupancy", "%"}, {5, F_GPM_TENSOR_UTIL, "any_tensor_util", "%"},
    {10, F_GPM_DRAM_UTIL, "dram_bw_util", "%"}, {11, F_GPM_FP64_UTIL, "fp64_util", "%"},
    {12, F_GPM_FP32_UTIL, "fp32_util", "%"},    {13, F_GPM_FP16_UTIL, "fp16_util", "%"},
    {20, F_GPM_PCIE_TX, "pcie_tx", "MiB/sec"},  {21, F_GPM_PCIE_RX, "pcie_rx", "MiB/sec"},
    {60, F_GPM_NVLINK_RX, "nvlink_total_rx", "MiB/sec"},
    {61, F_GPM_NVLINK_TX, "nvlink_total_tx", "MiB/sec"},
};

/* Both samples must be of one GPU, taken in order. The per-GPU checks (not_supported and
 * no_permission by symbol name, lost) apply to that GPU; `gpm_not_supported` fails single
 * metrics. Values are the configured ones whatever the time between the samples. */
EXPORT nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *metricsGet)
{
    SYS();
    if (!metricsGet)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (metricsGet->version != NVML_GPM_METRICS_GET_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    struct fgpm *a = lookup_gpm(metricsGet->sample1), *b = lookup_gpm(metricsGet->sample2);
    if (!a || !b || !a->taken || !b->taken || a->gpu != b->gpu || a->at_ms > b->at_ms ||
        metricsGet->numMetrics > NVML_GPM_METRIC_MAX)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (a->gpu >= g_cfg.gpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    const struct gpu_cfg *g = &g_cfg.gpu[a->gpu];
    if (in_list(g->not_supported, __func__))
        return NVML_ERROR_NOT_SUPPORTED;
    if (in_list(g->no_permission, __func__))
        return NVML_ERROR_NO_PERMISSION;
    if (g_cfg.lost_mask & (1ull << a->gpu))
        return NVML_ERROR_GPU_IS_LOST;
    if (!g->v[F_GPM])
        return NVML_ERROR_NOT_SUPPORTED;
    for (unsigned int i = 0; i < metricsGet->numMetrics; i++) {
        nvmlGpmMetric_t *m = &metricsGet->metrics[i];
        char id[16];
        m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        m->value = 0.0;
        m->metricInfo.shortName = NULL;
        m->metricInfo.longName = NULL;
        m->metricInfo.unit = NULL;
        snprintf(id, sizeof id, "%u", m->metricId);
        if (in_list(g->gpm_not_supported, id))
            continue;
        for (size_t k = 0; k < sizeof k_gpm_metrics / sizeof k_gpm_metrics[0]; k++) {
            if (k_gpm_metrics[k].id == m->metricId) {
                m->nvmlReturn = NVML_SUCCESS;
                m->value = (double)g->v[k_gpm_metrics[k].field];
                m->metricInfo.shortName = k_gpm_metrics[k].short_name;
                m->metricInfo.longName = k_gpm_metrics[k].short_name;
                m->metricInfo.unit = k_gpm_metrics[k].unit;
                break;
            }
        }
    }
    return NVML_SUCCESS;
}
