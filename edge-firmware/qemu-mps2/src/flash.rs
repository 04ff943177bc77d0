//! NOR flash for the QEMU board, kept in a file on the host through semihosting, so the
//! broker's persisted state outlives QEMU: restart QEMU in the same directory and the
//! firmware finds it again.
//!
//! The file ([`PATH`], in QEMU's working directory) is [`SIZE`] bytes, erased bytes are
//! `0xFF`, and a write can only clear bits (each write is ANDed into what is there), as on
//! real NOR flash. Like the STM32H7's internal flash (the NUCLEO board's), it is written in
//! 32-byte words, each once between two erases of its page: a second write of a word
//! fails ([`FlashError::Rewrite`]), so the board CI runs keeps the persistence code to what
//! the strictest real flash allows. (A word counts as written once it differs from all
//! `0xFF`: no bitmap of written words needs RAM, and a word written with only `0xFF`
//! bytes changed nothing the check could miss.)

use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom, Write};

/// The flash file, relative to QEMU's working directory.
pub const PATH: &core::ffi::CStr = c"fulmar-flash.bin";
/// Flash size: 16 pages of 4 KiB.
pub const SIZE: u32 = 64 * 1024;
const PAGE: u32 = 4096;
/// The unit of a write, as on the STM32H7 (256 bits plus ECC).
const WORD: usize = 32;
/// Bytes moved per semihosting call: whole words.
const CHUNK: usize = 256;

/// Why the flash file failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum FlashError {
    /// The host refused a file operation.
    Io,
    /// An access outside the flash.
    OutOfBounds,
    /// A write not of whole words at a word's address.
    NotAligned,
    /// A word written again before its page was erased.
    Rewrite,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::Io => NorFlashErrorKind::Other,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::Rewrite => NorFlashErrorKind::Other,
        }
    }
}

/// The flash file.
#[derive(Debug)]
pub struct FileFlash {
    file: File,
}

impl FileFlash {
    /// Opens the flash file, creating it erased if it is missing or short.
    pub fn open() -> Result<Self, FlashError> {
        let existing = File::options().read(true).write(true).open(PATH);
        let file = match existing {
            Ok(file) => file,
            Err(_) => File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(PATH)
                .map_err(|_| FlashError::Io)?,
        };
        let len = file.metadata().map_err(|_| FlashError::Io)?.len();
        let mut flash = Self { file };
        if len < u64::from(SIZE) {
            // A new (or truncated) file: erased from where it ends.
            let start = (len as u32) / PAGE * PAGE;
            flash.fill(start, SIZE, 0xFF)?;
        }
        Ok(flash)
    }

    fn seek(&mut self, offset: u32) -> Result<(), FlashError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .map(|_| ())
            .map_err(|_| FlashError::Io)
    }

    fn fill(&mut self, from: u32, to: u32, byte: u8) -> Result<(), FlashError> {
        let chunk = [byte; CHUNK];
        self.seek(from)?;
        let mut left = (to - from) as usize;
        while left > 0 {
            let n = left.min(CHUNK);
            self.file
                .write_all(&chunk[..n])
                .map_err(|_| FlashError::Io)?;
            left -= n;
        }
        Ok(())
    }

    fn check(offset: u32, len: usize) -> Result<(), FlashError> {
        match offset.checked_add(len as u32) {
            Some(end) if end <= SIZE => Ok(()),
            _ => Err(FlashError::OutOfBounds),
        }
    }
}

impl ErrorType for FileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        Self::check(offset, bytes.len())?;
        self.seek(offset)?;
        self.file.read_exact(bytes).map_err(|_| FlashError::Io)
    }

    fn capacity(&self) -> usize {
        SIZE as usize
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE as usize;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to || to > SIZE || !from.is_multiple_of(PAGE) || !to.is_multiple_of(PAGE) {
            return Err(FlashError::OutOfBounds);
        }
        self.fill(from, to, 0xFF)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        Self::check(offset, bytes.len())?;
        if !(offset as usize).is_multiple_of(WORD) || !bytes.len().is_multiple_of(WORD) {
            return Err(FlashError::NotAligned);
        }
        let mut done = 0;
        for chunk in bytes.chunks(CHUNK) {
            let at = offset + done as u32;
            let mut current = [0u8; CHUNK];
            let current = &mut current[..chunk.len()];
            self.seek(at)?;
            self.file.read_exact(current).map_err(|_| FlashError::Io)?;
            if current
                .chunks(WORD)
                .any(|word| word.iter().any(|&b| b != 0xFF))
            {
                defmt::error!("flash: a word at {=u32:#x}.. written twice", at);
                return Err(FlashError::Rewrite);
            }
            // NOR flash only clears bits (the word is erased: this is the write itself).
            for (old, new) in current.iter_mut().zip(chunk) {
                *old &= new;
            }
            self.seek(at)?;
            self.file.write_all(current).map_err(|_| FlashError::Io)?;
            done += chunk.len();
        }
        Ok(())
    }
}
