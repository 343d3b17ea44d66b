// CUDA's thread model on the CPU, for the kernel tests (tests/cudaemu/emulate.py).
//
// Compile a kernel's CUDA source after this header with a C++20 compiler:
// __global__/__device__ become nothing, threadIdx/blockIdx are thread-local,
// each block is run by blockDim.x std::threads that share the block's dynamic
// shared memory (`extern __shared__ T name[];` is rewritten by emulate.py into a
// pointer to it), and __syncthreads() is a std::barrier across those threads.
// With EMU_FIBERS defined the block's threads are coroutines instead (see below).
// Blocks run one after another on the same threads; between blocks the shared
// buffer is filled with 0xFF bytes (NaN for floats), so a kernel that reads
// shared memory it did not write this block gives NaN instead of a stale value.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstring>
#include <math.h>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;
inline thread_local unsigned char* emu_shared_ = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline

#ifdef EMU_FIBERS
// Fibers: the block's threads are coroutines on one OS thread; each runs until
// __syncthreads() and yields; the block resumes when all of them arrived.
// Deterministic and fast enough for 1000-row sweeps; thread t runs before t+1 in
// every phase, so a read of a value another thread writes in the same phase (a
// missing __syncthreads) sees the old value and the result comes out wrong.
// The switch saves the callee-saved registers of the x86-64 System V ABI
// (ucontext's swapcontext makes a system call per switch: 200x slower).
#if !defined(__x86_64__)
#error "the fiber emulation switches stacks with x86-64 assembly"
#endif
#include <cstdint>
#include <functional>

extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.p2align 4
.local emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");

struct EmuFiber {
    void* sp = nullptr;
    std::vector<char> stack;
    bool done = false;
};
inline thread_local void* emu_main_sp_ = nullptr;
inline thread_local EmuFiber* emu_cur_ = nullptr;
inline thread_local std::function<void()>* emu_body_ = nullptr;
#define __syncthreads() (emu_switch(&emu_cur_->sp, emu_main_sp_))

inline void emu_fiber_entry() {
    (*emu_body_)();
    emu_cur_->done = true;
    void* dead;
    emu_switch(&dead, emu_main_sp_);  // never resumed
}

inline void emu_fiber_start(EmuFiber& f) {
    auto top = reinterpret_cast<std::uintptr_t>(f.stack.data() + f.stack.size()) & ~std::uintptr_t(15);
    auto* sp = reinterpret_cast<std::uintptr_t*>(top);
    *--sp = 0;                                                  // alignment slot
    *--sp = reinterpret_cast<std::uintptr_t>(&emu_fiber_entry);  // where `ret` goes
    for (int r = 0; r < 6; ++r) *--sp = 0;                      // rbp rbx r12-r15
    f.sp = sp;
    f.done = false;
}

// Run kernel<<<grid, block, shmem>>>(args...); 0 on success, 1 when some threads of
// a block returned while others wait at a __syncthreads() (a deadlock on a GPU).
template <typename... P, typename... A>
int emu_launch(void (*kernel)(P...), unsigned grid, unsigned block, std::size_t shmem,
               A... args) {
    std::vector<unsigned char> shared(shmem + 16);
    emu_shared_ = shared.data();
    blockDim = dim3{block, 1, 1};
    gridDim = dim3{grid, 1, 1};
    std::function<void()> body = [&] { kernel(args...); };
    emu_body_ = &body;
    std::vector<EmuFiber> fib(block);
    for (auto& f : fib) f.stack.resize(1 << 14);
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = dim3{b, 0, 0};
        std::memset(shared.data(), 0xFF, shared.size());
        for (auto& f : fib) emu_fiber_start(f);
        for (;;) {
            unsigned finished = 0;
            for (unsigned t = 0; t < block; ++t) {
                if (fib[t].done) { ++finished; continue; }
                emu_cur_ = &fib[t];
                threadIdx = dim3{t, 0, 0};
                emu_switch(&emu_main_sp_, fib[t].sp);
                finished += fib[t].done;
            }
            if (finished == block) break;
            if (finished) return 1;
        }
    }
    return 0;
}
#else
#include <barrier>
#include <thread>

inline thread_local std::barrier<>* emu_barrier_ = nullptr;
#define __syncthreads() (emu_barrier_->arrive_and_wait())

// Run kernel<<<grid, block, shmem>>>(args...) on blockDim.x std::threads; returns 0
// when every block is done (a divergent __syncthreads() hangs, as on a GPU).
template <typename... P, typename... A>
int emu_launch(void (*kernel)(P...), unsigned grid, unsigned block, std::size_t shmem,
               A... args) {
    std::vector<unsigned char> shared(shmem + 16, 0xFF);
    std::barrier<> bar(block);
    blockDim = dim3{block, 1, 1};
    gridDim = dim3{grid, 1, 1};
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([&, t] {
            threadIdx = dim3{t, 0, 0};
            emu_barrier_ = &bar;
            emu_shared_ = shared.data();
            for (unsigned b = 0; b < grid; ++b) {
                blockIdx = dim3{b, 0, 0};
                kernel(args...);
                bar.arrive_and_wait();  // the block is done: every thread left the kernel
                if (t == 0) std::memset(shared.data(), 0xFF, shared.size());
                bar.arrive_and_wait();
            }
        });
    }
    for (auto& th : threads) th.join();
    return 0;
}
#endif
