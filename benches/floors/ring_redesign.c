// What a ring that leaves nothing queued in its socket would add, per operation (issue 23, F6;
// docs/ring.md, "Why the copy stays queued"). Not built by CI: a measurement tool.
//
//     gcc -O2 -o /tmp/ring_redesign benches/floors/ring_redesign.c && /tmp/ring_redesign 20000
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <errno.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
static int sendfds(int s,int*fds,int n){char c=0;struct iovec io={&c,1};char buf[CMSG_SPACE(sizeof(int)*8)];memset(buf,0,sizeof buf);
 struct msghdr m={0};m.msg_iov=&io;m.msg_iovlen=1;m.msg_control=buf;m.msg_controllen=CMSG_SPACE(sizeof(int)*n);
 struct cmsghdr*h=CMSG_FIRSTHDR(&m);h->cmsg_level=SOL_SOCKET;h->cmsg_type=SCM_RIGHTS;h->cmsg_len=CMSG_LEN(sizeof(int)*n);memcpy(CMSG_DATA(h),fds,sizeof(int)*n);return sendmsg(s,&m,0);}
static int recvfds(int s,int*fds,int n){char c;struct iovec io={&c,1};char buf[CMSG_SPACE(sizeof(int)*8)];struct msghdr m={0};m.msg_iov=&io;m.msg_iovlen=1;m.msg_control=buf;m.msg_controllen=sizeof buf;
 int r=recvmsg(s,&m,0);struct cmsghdr*h=CMSG_FIRSTHDR(&m);if(h)memcpy(fds,CMSG_DATA(h),sizeof(int)*n);return r;}
int main(int argc,char**argv){int N=argc>1?atoi(argv[1]):20000;double t;int sv[2];
 socketpair(AF_UNIX,SOCK_SEQPACKET,0,sv);
 t=now();for(int i=0;i<N;i++){char b;recv(sv[0],&b,1,MSG_DONTWAIT);}printf("recv on an empty socket (EAGAIN): %.0f ns\n",(now()-t)/N);
 t=now();for(int i=0;i<N;i++){int p[2];socketpair(AF_UNIX,SOCK_SEQPACKET,0,p);close(p[0]);close(p[1]);}printf("socketpair + 2 closes: %.0f ns\n",(now()-t)/N);
 t=now();for(int i=0;i<N;i++){int f=memfd_create("x",MFD_CLOEXEC|MFD_ALLOW_SEALING);ftruncate(f,532480);close(f);}printf("memfd_create + ftruncate + close: %.0f ns\n",(now()-t)/N);
 t=now();for(int i=0;i<N;i++){int f=memfd_create("x",MFD_CLOEXEC|MFD_ALLOW_SEALING);ftruncate(f,532480);void*p=mmap(0,532480,PROT_READ|PROT_WRITE,MAP_SHARED,f,0);*(volatile char*)p=1;munmap(p,532480);close(f);}printf("... + mmap, touch a page, munmap: %.0f ns\n",(now()-t)/N);
 int f=memfd_create("x",MFD_CLOEXEC);int p[2];socketpair(AF_UNIX,SOCK_SEQPACKET,0,p);
 t=now();for(int i=0;i<N;i++){int fds[1]={p[1]};sendfds(sv[0],fds,1);int got[1];recvfds(sv[1],got,1);close(got[0]);}double one=(now()-t)/N;
 t=now();for(int i=0;i<N;i++){int fds[2]={p[1],f};sendfds(sv[0],fds,2);int got[2];recvfds(sv[1],got,2);close(got[0]);close(got[1]);}double two=(now()-t)/N;
 printf("pass 1 descriptor: %.0f ns, pass 2 (one more, closed after): %.0f ns\n",one,two);
 return 0;}
