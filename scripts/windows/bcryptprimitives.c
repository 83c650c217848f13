/* A stand-in for Windows' bcryptprimitives.dll, for running Rust test binaries under Wine 8.
 *
 * Rust's std (1.78 and later) takes random bytes from ProcessPrng in bcryptprimitives.dll,
 * which Wine 8 does not provide: a Windows test binary then exits at once with code 53. This
 * DLL exports ProcessPrng and forwards it to advapi32's SystemFunction036 (RtlGenRandom).
 * Built by scripts/windows-lane.sh; never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
